import subprocess
import sys

from cli import build_parser, main


def test_help_lists_subcommands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "usage: recon" in out


def test_version():
    proc = subprocess.run([sys.executable, "-m", "recon", "--version"], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("recon3r ")


def test_parser_builds():
    build_parser()
