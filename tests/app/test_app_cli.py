"""`recon app` / `python -m app` options and start-up errors, and the model menu (no server started)."""

from __future__ import annotations

import json
import sys

import pytest
from fixture_files import require_extra

from cli import main


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["app", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--checkpoint", "--host", "--port", "--share", "--concurrency", "--max-images"):
        assert option in out


def test_missing_checkpoint_is_a_user_error(tmp_path, capsys):
    assert main(["app", "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_bad_limit_is_a_user_error(capsys):
    assert main(["app", "--max-images", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err


def test_python_m_app_shares_the_options(capsys):
    from app.cli import main as app_main

    assert app_main(["--concurrency", "0"]) == 2
    assert "concurrency_limit must be >= 1" in capsys.readouterr().err


def test_importing_app_does_not_import_gradio():
    import subprocess

    code = "import app, app.cli, app.handlers, app.uploads, sys; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


class TestModels:
    def test_checkpoint_loads_once_and_absent_weights_have_hints(self, checkpoint, tmp_path, monkeypatch):
        from app.models import ModelStore, ModelUnavailableError

        monkeypatch.setenv("RECON_HOME", str(tmp_path / "empty-cache"))
        store = ModelStore(checkpoint, device="cpu")
        key = "checkpoint:micro.pth"  # the menu key: the file name, never the server's path
        assert store.default_key == key and not store.is_random(key)
        assert store.get(key) is store.get(key)
        options = store.options()
        assert options[0].key == key and options[0].present
        tiny = [o for o in options if o.key == "recon-tiny"]  # ships inside the package: always present
        assert len(tiny) == 1 and tiny[0].present and "trained on synthetic scenes" in tiny[0].label
        absent = [o for o in options[1:] if not o.present]
        assert absent and len(absent) == len(options) - 2
        assert all("recon weights download" in o.hint for o in absent)
        with pytest.raises(ModelUnavailableError, match="not available"):
            store.get(absent[0].key)

    def test_no_model_given_and_none_cached_offers_recon_tiny(self, tmp_path, monkeypatch):
        require_extra("gradio")
        import gradio as gr

        from app.ui import build_app

        monkeypatch.setenv("RECON_HOME", str(tmp_path / "empty-cache"))
        demo = build_app(None)  # recon-tiny ships inside the package, so a model is always there
        try:
            (dropdown,) = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Model"]
            assert dropdown.value == "recon-tiny" and [c[1] for c in dropdown.choices] == ["recon-tiny"]
        finally:
            demo.recon_workspaces.close_all()

    def test_startup_choice_offline_is_recon_tiny_and_the_random_model_is_seeded(self, tmp_path, monkeypatch):
        import torch

        from app.models import RANDOM_KEY, ModelStore, choose_startup_model, random_model

        monkeypatch.setenv("RECON_HOME", str(tmp_path / "empty-cache"))
        choice = choose_startup_model()
        assert choice.model == "recon-tiny" and "trained on synthetic scenes" in choice.reason
        assert "recon weights download" in choice.reason
        state = torch.random.get_rng_state()
        a, b = random_model(), random_model()
        assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is left alone
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(pa, pb), name
        store = ModelStore(RANDOM_KEY, device="cpu")
        assert store.is_random(store.default_key) and store.options()[0].present

    def test_startup_choice_prefers_cached_real_weights(self, tmp_path, monkeypatch):
        from app.models import choose_startup_model
        from backbone import hub

        monkeypatch.setenv("RECON_HOME", str(tmp_path / "cache"))
        entry = hub.list_weights(kind="model")[-1]
        monkeypatch.setattr(hub, "cached_path", lambda name: tmp_path / "w" if name == entry.name else None)
        assert choose_startup_model().model == entry.name
        assert choose_startup_model(model="x").model == "x"
        assert choose_startup_model(checkpoint=tmp_path / "m.pth").model == str(tmp_path / "m.pth")

    def test_build_app_from_a_checkpoint(self, checkpoint, tmp_path, monkeypatch):
        require_extra("gradio")
        import gradio as gr

        from app.ui import build_app

        monkeypatch.setenv("RECON_HOME", str(tmp_path / "empty-cache"))
        demo = build_app(str(checkpoint))
        try:
            (dropdown,) = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Model"]
            assert dropdown.value == "checkpoint:micro.pth"
            assert [c[1] for c in dropdown.choices] == ["checkpoint:micro.pth", "recon-tiny"]
            # the API description (what /gradio_api/info serves) names no server path
            info = json.dumps(demo.get_api_info())
            assert str(checkpoint.parent) not in info and str(demo.recon_workspaces.root) not in info
        finally:
            demo.recon_workspaces.close_all()
