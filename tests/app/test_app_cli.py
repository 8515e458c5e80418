"""`recon app` / `python -m app` options and start-up errors, and the model menu (no server started)."""

from __future__ import annotations

import sys

import pytest

from recon.cli import main


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
        from app.models import ModelStore

        monkeypatch.setenv("RECON_HOME", str(tmp_path / "empty-cache"))
        store = ModelStore(checkpoint, device="cpu")
        assert store.default_key == str(checkpoint)
        assert store.get(str(checkpoint)) is store.get(str(checkpoint))
        options = store.options()
        assert options[0].key == str(checkpoint) and options[0].present
        absent = [o for o in options[1:] if not o.present]
        assert absent and len(absent) == len(options) - 1
        assert all("recon weights download" in o.hint for o in absent)
        with pytest.raises(KeyError, match="not available"):
            store.get(absent[0].key)

    def test_no_model_at_all(self, tmp_path, monkeypatch):
        pytest.importorskip("gradio")
        from app.handlers import RunError
        from app.ui import build_app

        monkeypatch.setenv("RECON_HOME", str(tmp_path / "empty-cache"))
        with pytest.raises(RunError, match="no model is available"):
            build_app(None)

    def test_build_app_from_a_checkpoint(self, checkpoint, tmp_path, monkeypatch):
        pytest.importorskip("gradio")
        import gradio as gr

        from app.ui import build_app

        monkeypatch.setenv("RECON_HOME", str(tmp_path / "empty-cache"))
        demo = build_app(str(checkpoint))
        try:
            (dropdown,) = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Model"]
            assert dropdown.value == str(checkpoint)
            assert [c[1] for c in dropdown.choices] == [str(checkpoint)]
        finally:
            demo.recon_workspaces.close_all()
