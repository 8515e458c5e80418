"""``recon train finetune`` / ``python -m training.finetune``: registration, config resolution, user errors."""

import json

import pytest

from cli import main
from training.finetune import cli
from training.finetune.config import PRESETS, FinetuneConfig, resolve_config


def test_recon_train_lists_finetune_and_prints_the_resolved_config(capsys):
    assert main(["train", "finetune", "--preset", "smoke", "--set", "train.lr=0.01", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["lr"] == 0.01 and cfg["model"]["backbone"] == "dune_vits14"


def test_config_file_merges_over_the_preset(tmp_path, capsys):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"data": {"resolutions": [[448, 336]], "sources": [{"kind": "co3d", "root": "/x"}]}}))
    assert cli.main(["--preset", "dune_vitb14_336", "--config", str(path), "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["data"]["resolutions"] == [[448, 336]] and cfg["data"]["sources"][0]["kind"] == "co3d"
    assert cfg["model"]["backbone_checkpoint"] == "dune_vitb14_336" and cfg["data"]["sources"][0]["weight"] == 1.0


def test_user_errors_are_reported_without_traceback(tmp_path, capsys):
    assert cli.main(["--preset", "smoke", "--set", "model.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": {"sources": [{"kind": "co3d", "root": str(tmp_path / "missing")}]},
                               "train": {"output_dir": str(tmp_path / "out")}}))  # fmt: skip
    assert cli.main(["--preset", "smoke", "--config", str(bad)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    out = ["--set", f"train.output_dir={tmp_path / 'out2'}"]
    assert cli.main(["--preset", "smoke", "--set", f"data.mixture=9 @ MegaDepth(root='{tmp_path}')", *out]) == 2
    assert "all_metadata.npz not found; expected" in capsys.readouterr().err
    assert cli.main(["--preset", "smoke", "--set", "data.mixture=9 @ MegaDepth(root=open('x'))", *out]) == 2
    assert "only literal values" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    from training.common.config import to_dict

    cfg = PRESETS[name]
    assert isinstance(cfg, FinetuneConfig) and resolve_config(name, to_dict(cfg)) == cfg
