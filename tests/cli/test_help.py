"""``recon --help`` and every subcommand's help: no torch import, a help text on every option, no empty defaults."""

import argparse
import subprocess
import sys

import pytest

from cli import build_parser


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


PARSERS = list(_walk(build_parser()))
COMMANDS = [path for path, _ in PARSERS]


def test_every_subcommand_is_walked():
    assert {("run",), ("weights", "list"), ("bench", "model"), ("eval", "co3d"), ("app",)} <= set(COMMANDS)
    assert any(path[:1] == ("train",) and len(path) == 2 for path in COMMANDS)


@pytest.mark.parametrize(("path", "parser"), PARSERS, ids=[" ".join(p) or "recon" for p in COMMANDS])
def test_every_option_has_help_and_no_empty_default(path, parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"recon {' '.join(path)}: {action.option_strings or action.dest} has no help text"
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text


def test_defaults_that_say_something_are_shown(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no line wrapping inside "(default: 0)"
    run = dict(PARSERS)[("run",)].format_help()
    assert "(default: 0)" in run  # --seed
    assert "(default: auto)" in run  # --graph / --device


@pytest.mark.parametrize("args", [[], ["run"], ["weights"], ["weights", "list"], ["bench", "model"], ["eval", "co3d"],
                                  ["app"], ["train"], ["synth"], ["viz"], ["eval", "match"]])  # fmt: skip
def test_help_imports_no_torch(args):
    # -X importtime lists every module imported, one per line, on stderr
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "recon", *args, "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: recon")
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    heavy = {"torch", "trimesh", "gradio"} & imported  # numpy (~0.1 s) is imported by tools.bench.align
    assert not heavy, f"`recon {' '.join(args)} --help` imports {sorted(heavy)}"


def test_usage_errors_are_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "recon", "run", "x", "--out", "y.glb", "--batch-size", "many"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: recon run: argument --batch-size")
