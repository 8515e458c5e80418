"""``training.common.run.run_loop``, the one loop of every recipe: exact resume, checkpoint and hook cadence, and a
non-finite loss that saves the last good state and stops in one line (here on a toy regression, and for the
feed-forward recipe; the other recipes' divergence tests sit with their end-to-end tests)."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from training.common.checkpoint import CheckpointManager, load_checkpoint
from training.common.config import RunConfig, apply_overrides, field_docs
from training.common.distributed import DistInfo
from training.common.run import TrainingDiverged, autocast, check_finite, run_loop

W_TRUE = torch.tensor([[1.0], [-2.0], [0.5]])


class Toy:
    """Linear regression with Adam; ``poison_from``: the inputs of that iteration on are NaN."""

    def __init__(self, poison_from: int | None = None) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.3)
        self.poison_from = poison_from
        self.losses: dict[int, float] = {}

    def step(self, batch, it: int) -> dict[str, float]:
        x, y = batch
        if self.poison_from is not None and it >= self.poison_from:
            x = x * float("nan")
        loss = F.mse_loss(self.model(x), y)
        check_finite(loss, it, {"loss": loss.item()}, "a toy gone wrong", DistInfo())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.losses[it] = loss.item()
        return {"loss": loss.item(), "samples": float(len(x))}


def batches(start: int):
    """The batch of iteration ``it`` is a pure function of ``it`` (as the recipes' samplers)."""
    for it in itertools.count(start):
        g = torch.Generator().manual_seed(it)
        x = torch.randn(8, 3, generator=g)
        yield x, x @ W_TRUE + 0.1 * torch.randn(8, 1, generator=g)


def run(out, total: int = 6, checkpoint_every: int = 2, poison_from: int | None = None, saved=None, **loop_kw):
    """A resumable toy run in ``out`` (resumes from its latest checkpoint, as a recipe's ``train``)."""
    trainer = Toy(poison_from)
    manager = CheckpointManager(out, keep=0)
    ckpt = manager.resume(model=trainer.model, optimizer=trainer.optimizer)
    start = int(ckpt["iter"]) if ckpt else 0
    cfg = RunConfig(output_dir=str(out), checkpoint_every=checkpoint_every, log_every=0, tensorboard=False)

    def save(it: int):
        if saved is not None:
            saved.append(it)
        return manager.save(it, model=trainer.model, optimizer=trainer.optimizer)

    result = run_loop(
        trainer, batches(start), run=cfg, info=DistInfo(), start=start, total=total, save=save,
        count=lambda m: m["samples"], unit="samples", **loop_kw,
    )  # fmt: skip
    return trainer, result


class CrashAt(Exception):
    pass


def test_resume_continues_at_the_checkpoint_and_repeats_the_uninterrupted_losses(tmp_path):
    full, full_result = run(tmp_path / "full")
    assert sorted(full.losses) == list(range(6)) and full_result.iterations == 6 and full_result.start == 0
    assert full.losses[5] < 0.5 * full.losses[0]  # it learns: the sequence compared below is not a constant

    def crash(it, trainer):
        if it == 3:  # after iteration 3, before its hooks and checkpoint: the last checkpoint is at 2
            raise CrashAt

    with pytest.raises(CrashAt):
        run(tmp_path / "crash", on_iteration=crash)
    assert [it for it, _ in CheckpointManager(tmp_path / "crash").all()] == [2]
    resumed, result = run(tmp_path / "crash")
    assert result.start == 2 and result.iterations == 6 and sorted(resumed.losses) == [2, 3, 4, 5]
    for it in range(2, 6):
        assert resumed.losses[it] == pytest.approx(full.losses[it], rel=1e-5, abs=1e-7), it
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert result.items == 4 * 8 and result.throughput > 0


def test_checkpoints_hooks_and_callbacks_follow_their_cadence(tmp_path):
    saved, hooked, called = [], [], []

    def hook(it):
        hooked.append(it)
        return {"val/x": float(it)}

    trainer, result = run(
        tmp_path, total=7, checkpoint_every=3, saved=saved, every={2: hook, 0: lambda it: 1 / 0},
        on_iteration=lambda it, tr: called.append((it, tr)),
    )  # fmt: skip
    assert saved == [3, 6, 7]  # every 3 and at the end
    assert hooked == [2, 4, 6, 7]  # every 2 and at the end; a period of 0 never runs
    assert [it for it, _ in called] == list(range(1, 8)) and all(tr is trainer for _, tr in called)
    assert [it for it, _ in CheckpointManager(tmp_path).all()] == [3, 6, 7]
    # A finished run started again does nothing.
    saved.clear()
    again, result = run(tmp_path, total=7, checkpoint_every=3, saved=saved)
    assert result.start == result.iterations == 7 and again.losses == {} and saved == [] and result.throughput == 0


def test_a_non_finite_loss_saves_the_last_good_state_and_raises_one_line(tmp_path):
    weights = {}
    with pytest.raises(TrainingDiverged) as info:
        run(tmp_path, poison_from=3, on_iteration=lambda it, tr: weights.update({it: tr.model.weight.detach().clone()}))
    err = info.value
    message = str(err)
    assert "\n" not in message and message.startswith("the loss is not finite at step 3 (loss nan): likely a toy")
    assert "train.lr" in message and "train.bf16=false" in message
    assert err.checkpoint == tmp_path / "checkpoint_00000003.pth"
    assert message.endswith(f"the last good weights are in {err.checkpoint} (the run resumes from them)")
    saved = load_checkpoint(err.checkpoint)
    assert saved["iter"] == 3 and torch.equal(saved["model"]["weight"], weights[3])  # the bad step changed nothing
    # The run resumes from it (here without the poison) and finishes.
    trainer, result = run(tmp_path)
    assert result.start == 3 and result.iterations == 6 and sorted(trainer.losses) == [3, 4, 5]


def test_check_finite_passes_a_finite_loss_and_names_the_terms_of_a_bad_one():
    check_finite(torch.tensor(1.5), 0, {}, "x", DistInfo())
    with pytest.raises(TrainingDiverged, match=r"step 4 \(loss inf, regr nan\): likely too hot"):
        check_finite(torch.tensor(float("inf")), 4, {"loss": float("inf"), "regr": float("nan")}, "too hot", DistInfo())
    with pytest.raises(TrainingDiverged, match=r"step 1 \(loss nan\)"):
        check_finite(torch.tensor(float("nan")), 1, {}, "x", DistInfo())


def test_autocast_is_bf16_on_cuda_only_when_asked():
    with autocast(RunConfig(bf16=True), torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
    assert RunConfig().bf16 and RunConfig().checkpoint_every == 1000
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1"):
        RunConfig(checkpoint_every=0)


RUN_FIELDS = [f.name for f in dataclasses.fields(RunConfig)]


@pytest.mark.parametrize("recipe", ["distill", "finetune", "mum", "feedforward"])
def test_every_recipe_keeps_the_run_fields_under_train(recipe):
    """The keys users pass (``--set train.bf16=false``) keep working, with one docstring each, from ``RunConfig``."""
    import importlib

    config = importlib.import_module(f"training.{recipe}.config")
    assert issubclass(config.TrainConfig, RunConfig)
    preset = next(iter(config.PRESETS.values()))
    changed = apply_overrides(preset, ["train.bf16=false", "train.keep_checkpoints=5", "train.log_every=7"])
    assert (changed.train.bf16, changed.train.keep_checkpoints, changed.train.log_every) == (False, 5, 7)
    docs = field_docs(config.TrainConfig)
    assert all(docs.get(name) for name in RUN_FIELDS), [n for n in RUN_FIELDS if not docs.get(n)]


def _tiny_feedforward(out):
    from training.feedforward.config import DatasetConfig, replace, resolve_config

    cfg = resolve_config("small")
    tiny = DatasetConfig(scenes=2, views=4, size=(28, 28))
    data = dataclasses.replace(cfg.data, datasets=(tiny,), frame_budget=4, views=(2, 4))
    return replace(
        dataclasses.replace(cfg, data=data),
        train={"output_dir": str(out), "log_every": 0, "warmup": 1, "iterations": 4, "checkpoint_every": 100},
    )


def test_feedforward_divergence_saves_the_last_good_state(tmp_path, diverge_at):
    from training.feedforward.train import train

    diverge_at(2, lambda trainer: trainer.model).check(train, _tiny_feedforward(tmp_path))


def test_a_diverged_run_is_one_error_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    """``TrainingDiverged`` is a ``UserError``: every recipe's command prints it as one line (here feed-forward)."""
    from training.common.config import save_json
    from training.feedforward import cli
    from training.feedforward import train as train_module

    real = train_module.feedforward_loss
    monkeypatch.setattr(train_module, "feedforward_loss", lambda *a, **k: (real(*a, **k)[0] * math.inf, {}))
    config = save_json(_tiny_feedforward(tmp_path / "run"), tmp_path / "cfg.json")
    assert cli.main(["--preset", "small", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the loss is not finite at step 0 (loss inf)"), err
    assert err[0].endswith(f"{tmp_path / 'run' / 'checkpoint_00000000.pth'} (the run resumes from them)")
