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
            AlignmentError, CodebookError, CameraFormatError, DatasetError, OverwriteRefusedError, ImageLoadError,
            GraphError, ReconstructionError, InputError, SceneError, QueryError, EvalModelUnavailableError,
            RunMismatchError, CamerasFileError, ConfigError, DataConfigError, TrainingDiverged, LayoutError,
            MixtureError, ExportError, ColmapModelError, RunError, RunCancelled, ModelUnavailableError,
            UploadError]  # fmt: skip


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
    """Every ``class ...Error(`` in the project is in the list above or is named here as a bug-only error."""
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
