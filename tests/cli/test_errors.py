"""One error base: every user-fixable error derives from ``UserError``; the CLI prints it as one line."""

import pytest

from cli import main
from recon.errors import UserError


def _user_error_classes():
    """Every error class a user can fix, from every layer (a new one belongs here)."""
    from app.handlers import RunCancelled, RunError
    from app.models import ModelUnavailableError
    from app.uploads import UploadError
    from backbone.checkpoint import CheckpointError
    from backbone.hub import UnknownWeightsError, WeightsError, WeightsIntegrityError, WeightsUnavailableError
    from recon.align.problem import AlignmentError
    from recon.asmk import CodebookError
    from recon.datasets.cameras import CameraFormatError
    from recon.datasets.data import DatasetError
    from recon.export import OverwriteRefusedError
    from recon.export.options import ExportOptionsError
    from recon.images import ImageLoadError
    from recon.pairs import GraphError
    from recon.pipeline import ReconstructionError
    from recon.plan import InputError
    from recon.scene import SceneError
    from recon.viz import QueryError
    from tools.eval.model_predictors import ModelUnavailableError as EvalModelUnavailableError
    from tools.eval.runner import RunMismatchError
    from tools.synth.folder import CamerasFileError
    from training.common.config import ConfigError, DataConfigError
    from training.common.run import TrainingDiverged
    from training.datasets.io import LayoutError
    from training.datasets.mixture import MixtureError
    from training.finetune.export import ExportError
    from training.mum.overlaps import ColmapModelError

    return [CheckpointError, UnknownWeightsError, WeightsError, WeightsIntegrityError, WeightsUnavailableError,
            AlignmentError, CodebookError, CameraFormatError, DatasetError, OverwriteRefusedError, ExportOptionsError,
            ImageLoadError, GraphError, ReconstructionError, InputError, SceneError, QueryError,
            EvalModelUnavailableError, RunMismatchError, CamerasFileError, ConfigError, DataConfigError,
            TrainingDiverged, LayoutError, MixtureError, ExportError, ColmapModelError, RunError, RunCancelled,
            ModelUnavailableError, UploadError]  # fmt: skip


@pytest.mark.parametrize("cls", _user_error_classes(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_derives_from_user_error(cls):
    assert issubclass(cls, UserError)


def test_every_recipe_raises_the_one_data_config_error():
    """``DataConfigError`` is defined once; each recipe's data module raises that class, not a copy."""
    from training.common.config import DataConfigError
    from training.distill import datasets as distill
    from training.feedforward import data as feedforward
    from training.finetune import datasets as finetune
    from training.mum import sequences as mum

    assert {m.DataConfigError for m in (distill, feedforward, finetune, mum)} == {DataConfigError}


def test_no_error_class_outside_the_list_is_left_off():
    """Every ``class ...Error(`` of the project is in the list above: a new one must be a ``UserError`` or be
    renamed (a bug is a plain exception with a traceback, not a ``...Error`` class of ours)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    listed = {c.__name__ for c in _user_error_classes()} | {"UserError"}
    defined = set()
    for folder in ("backbone", "recon", "training", "app", "tools", "cli"):
        for path in (root / folder).rglob("*.py"):
            defined |= set(re.findall(r"^class (\w+Error)\(", path.read_text(), flags=re.M))
    assert defined - listed == set(), "a new error class: add it to _user_error_classes (or derive it from UserError)"


def _fail_with(exc):
    def func(args):
        raise exc

    return func


@pytest.mark.parametrize("message", ["weights missing\noffline: put the file at /x", "plain"])
def test_user_error_is_one_line_no_traceback(monkeypatch, capsys, message):
    from backbone.hub import WeightsUnavailableError

    monkeypatch.setattr("cli.weights._list", _fail_with(WeightsUnavailableError(message)))
    assert main(["weights", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_other_exceptions_are_bugs_and_propagate(monkeypatch):
    monkeypatch.setattr("cli.weights._list", _fail_with(ZeroDivisionError("bug")))
    with pytest.raises(ZeroDivisionError):
        main(["weights", "list"])


def _bad_input_per_command(tmp: str):
    """One bad flag or path per subcommand (``recon run`` has its own full set in test_bad_input_cli.py)."""
    return [
        (["run", f"{tmp}/missing", "--model", "random:mast3r_tiny", "--out", f"{tmp}/x.glb"], "missing"),
        (["synth", "orbit", "--objects", "0", "--out", f"{tmp}/s"], "--objects must be >= 1"),
        (["weights", "list", "--family", "nope"], "unknown family 'nope'"),
        (["bench", "pipeline", "--checkpoint", f"{tmp}/missing.pth"], "missing.pth"),
        (["eval", "co3d", "--root", f"{tmp}/missing", "--oracle", "--out", f"{tmp}/o"], "is not a folder"),
        (["eval", "co3d", "--root", tmp, "--oracle", "--shard", "3/3", "--out", f"{tmp}/o"], "--shard 3/3"),
        (["viz", "features", f"{tmp}/missing.jpg", "--model", "random:mast3r_tiny", "--out", tmp], "missing.jpg"),
        (["app", "--concurrency", "0"], "concurrency_limit must be >= 1"),
        (["train", "mum", "--config", f"{tmp}/none.json"], "config file not found"),
        (["train", "distill", "--preset", "smoke", "--set", "train.nope=1"], "no field 'train.nope'"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_input_per_command("T"))))
def test_bad_input_to_each_command_is_one_error_line(tmp_path, capsys, case):
    args, expect = _bad_input_per_command(str(tmp_path))[case]
    assert main(["-q", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expect in err
