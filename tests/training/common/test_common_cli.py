"""``training.common.cli``: the recipe command line shared by distill, finetune and MuM."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from recon.errors import UserError
from training.common.cli import Recipe

RECIPES = ("distill", "finetune", "mum")


@pytest.mark.parametrize("name", RECIPES)
def test_declaration_matches_the_recipe(name):
    cli = importlib.import_module(f"training.{name}.cli")
    config = importlib.import_module(f"training.{name}.config")
    recipe = cli.RECIPE
    assert recipe.name == name and recipe.prog == f"python -m training.{name}"
    assert recipe.presets == tuple(config.PRESETS)  # --help lists every preset, in the config's order
    code = recipe.code()
    assert inspect.signature(code.resolve_config).parameters["preset"].default == recipe.default_preset
    assert all(type(cfg) is code.config_class for cfg in config.PRESETS.values())
    assert callable(code.train)
    assert cli.main == recipe.main and cli.register == recipe.register and cli.run == recipe.run


def test_registration_imports_no_torch():
    code = (
        "import argparse, sys\n"
        "from training.distill import cli as d\n"
        "from training.finetune import cli as f\n"
        "from training.mum import cli as m\n"
        "sub = argparse.ArgumentParser().add_subparsers()\n"
        "for c in (d, f, m):\n    c.register(sub)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[3])
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------- run / main on a fake train
class FakeDataError(UserError):
    pass


def fake_train(cfg):
    """Stands in for a recipe's ``train``: fails as told by the output folder's name."""
    if cfg.train.output_dir.endswith("baddata"):
        raise FakeDataError("dataset folder /nowhere is not a folder")
    if cfg.train.output_dir.endswith("bug"):
        raise RuntimeError("a bug, not a user error")
    return SimpleNamespace(iterations=cfg.train.iterations, output_dir=cfg.train.output_dir)


MUM = importlib.import_module("training.mum.cli")
FAKE = dataclasses.replace(
    MUM.RECIPE,
    name="fake",
    prog="python -m fake",
    code=lambda: dataclasses.replace(MUM.code(), train=fake_train),
    summary=lambda result: f"{result.iterations} iterations into {result.output_dir}",
)


def test_main_trains_and_prints_the_summary(tmp_path, capsys):
    assert FAKE.main(["--preset", "smoke", "--set", "train.iterations=7", "--output-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"7 iterations into {tmp_path}\n"


def test_user_errors_exit_2_without_traceback_and_bugs_propagate(tmp_path, capsys):
    assert FAKE.main(["--preset", "smoke", "--output-dir", str(tmp_path / "baddata")]) == 2
    assert capsys.readouterr().err == "error: dataset folder /nowhere is not a folder\n"
    assert FAKE.main(["--preset", "smoke", "--config", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err == f"error: config file not found: {tmp_path / 'none.json'}\n"
    with pytest.raises(RuntimeError, match="a bug"):
        FAKE.main(["--preset", "smoke", "--output-dir", str(tmp_path / "bug")])


def test_recipe_is_a_frozen_declaration():
    assert isinstance(FAKE, Recipe)
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAKE.name = "other"  # type: ignore[misc]


# ------------------------------------------------------------------------------------- the recipes' summary lines
def test_summary_lines():
    from training.distill.cli import summary as distill_summary
    from training.finetune.cli import summary as finetune_summary
    from training.mum.cli import summary as mum_summary

    distill = SimpleNamespace(iterations=30, images_per_second=12.345, skipped_images=2, final_checkpoint="o/d.pth")
    assert distill_summary(distill) == "30 iterations, 12.3 images/s, 2 unreadable images skipped; final model: o/d.pth"
    finetune = SimpleNamespace(
        iterations=4, pairs_per_second=1.234, layout="recon", final_model="o/f.pth", backbone_path=None, validation={}
    )
    assert finetune_summary(finetune) == "4 steps, 1.23 pairs/s; final model (recon layout): o/f.pth"
    finetune.backbone_path, finetune.layout, finetune.validation = "o/b.pth", "dune_mast3r", {"v/err": 0.123456}
    assert finetune_summary(finetune) == (
        "4 steps, 1.23 pairs/s; final model (dune_mast3r layout): o/f.pth (backbone: o/b.pth)\nvalidation: v/err 0.1235"
    )
    mum = SimpleNamespace(iterations=3, frames_per_second=5.54, skipped_images=0, outputs={"autoencoder": "o/m.pth"})
    assert mum_summary(mum) == "3 iterations, 5.5 frames/s, 0 unreadable images skipped; final model: o/m.pth"
    mum.outputs = None
    assert mum_summary(mum).endswith("final model: None")
