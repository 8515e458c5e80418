"""One error base: every user-fixable error derives from ``UserError``; the CLI prints it as one line."""

import pytest

from cli import main
from recon.errors import UserError


def _user_error_classes():
    from backbone.checkpoint import CheckpointError
    from backbone.hub import UnknownWeightsError, WeightsError, WeightsIntegrityError, WeightsUnavailableError
    from recon.align.problem import AlignmentError
    from recon.datasets.cameras import CameraFormatError
    from recon.datasets.data import DatasetError
    from recon.images import ImageLoadError
    from recon.pairs import GraphError
    from recon.pipeline import ReconstructionError
    from recon.plan import InputError
    from tools.eval.model_predictors import ModelUnavailableError
    from tools.eval.runner import RunMismatchError
    from tools.synth.folder import CamerasFileError
    from training.common.config import ConfigError
    from training.distill.datasets import DataConfigError as DistillDataError
    from training.finetune.datasets import DataConfigError as FinetuneDataError
    from training.finetune.export import ExportError
    from training.mum.sequences import DataConfigError as MumDataError

    return [CheckpointError, UnknownWeightsError, WeightsError, WeightsIntegrityError, WeightsUnavailableError,
            AlignmentError, CameraFormatError, DatasetError, ModelUnavailableError, RunMismatchError,
            ImageLoadError, GraphError, ReconstructionError, InputError, CamerasFileError, ConfigError,
            DistillDataError, FinetuneDataError, ExportError, MumDataError]  # fmt: skip


@pytest.mark.parametrize("cls", _user_error_classes(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_derives_from_user_error(cls):
    assert issubclass(cls, UserError)


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
