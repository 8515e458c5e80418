"""``recon.config``: flags built from typed configs (types, choices, defaults, help) and configs built back."""

import argparse
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from recon.config import Flag, add_flags, field_docs, from_flags


@dataclass(frozen=True)
class Limits:
    """Nested section."""

    max_images: int = 50
    """Images per run."""


@dataclass(frozen=True)
class Config:
    """A config documented in the Google style.

    Attributes:
        size: network input size; ``None`` = the model's.
        mode: how to align, over two
            lines.
        use_exif: read EXIF.
        out: where to write.
        ratio: a fraction.
    """

    size: int | None = None
    mode: Literal["sparse", "dense"] = "sparse"
    use_exif: bool = True
    out: Path | None = None
    ratio: float = 0.5
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self):
        if self.ratio > 1:
            raise ValueError(f"ratio must be <= 1, got {self.ratio}")


FLAGS = (
    Flag("size"),
    Flag("mode"),
    Flag("use_exif", "--no-exif", invert=True),
    Flag("out"),
    Flag("ratio"),
    Flag("limits.max_images"),
)


def _parser(defaults=None):
    parser = argparse.ArgumentParser()
    add_flags(parser, Config, FLAGS, defaults)
    return parser


def test_field_docs_read_both_styles():
    docs = field_docs(Config)
    assert docs["size"] == "network input size; ``None`` = the model's."
    assert docs["mode"] == "how to align, over two lines."
    assert field_docs(Limits) == {"max_images": "Images per run."}


def test_defaults_round_trip_to_the_class_defaults():
    assert from_flags(Config, _parser().parse_args([]), FLAGS) == Config()


def test_flags_convert_and_nest():
    args = _parser().parse_args(["--size", "224", "--mode", "dense", "--no-exif", "--out", "x.glb", "--ratio", "0.25",
                                 "--max-images", "7"])  # fmt: skip
    cfg = from_flags(Config, args, FLAGS)
    assert cfg == Config(size=224, mode="dense", use_exif=False, out=Path("x.glb"), ratio=0.25, limits=Limits(7))


def test_extra_fields_are_passed_as_they_are():
    assert from_flags(Config, _parser().parse_args([]), FLAGS[:1], ratio=1.0).ratio == 1.0


def test_literal_gives_choices_and_a_bad_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["--mode", "bundle"])
    assert exc.value.code == 2
    assert "invalid choice: 'bundle'" in capsys.readouterr().err


def test_help_comes_from_the_field_docs():
    text = " ".join(_parser().format_help().split())
    assert "--size SIZE network input size; `None` = the model's" in text  # one line, no final period
    assert "--max-images MAX_IMAGES images per run" in text  # lower case like every help text
    assert "--no-exif read EXIF" in text


def test_defaults_from_an_instance():
    parser = _parser(Config(size=160, mode="dense"))
    assert from_flags(Config, parser.parse_args([]), FLAGS) == Config(size=160, mode="dense")


def test_a_switch_must_match_its_default():
    with pytest.raises(ValueError, match="--exif: a switch needs default False for use_exif"):
        add_flags(argparse.ArgumentParser(), Config, [Flag("use_exif", "--exif")])


def test_an_unknown_field_is_named():
    with pytest.raises(AttributeError, match="Config has no field 'nope'"):
        add_flags(argparse.ArgumentParser(), Config, [Flag("nope")])


def test_the_config_checks_run_when_built():
    with pytest.raises(ValueError, match="ratio must be <= 1"):
        from_flags(Config, _parser().parse_args(["--ratio", "2"]), FLAGS)


def test_flags_of_the_commands_come_from_their_configs():
    """Each front-end's flag defaults are its config's defaults (no second copy to drift)."""
    from app.cli import add_arguments
    from app.config import AppConfig
    from cli.eval import BENCHMARK_FLAGS
    from cli.run import PIPELINE_FLAGS, PRIOR_FLAGS
    from recon.settings import ReconstructConfig, UserPriors
    from tools.eval.options import BenchmarkOptions

    cases = [(ReconstructConfig, PIPELINE_FLAGS), (UserPriors, PRIOR_FLAGS), (BenchmarkOptions, BENCHMARK_FLAGS)]
    for cls, flags in cases:
        parser = argparse.ArgumentParser()
        add_flags(parser, cls, flags)
        built = from_flags(cls, parser.parse_args([]), flags)
        assert built == cls(), cls.__name__
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    from app.cli import EXAMPLES_FLAG, LIMIT_FLAGS, SERVER_FLAGS

    assert from_flags(AppConfig, parser.parse_args([]), (*SERVER_FLAGS, *LIMIT_FLAGS, EXAMPLES_FLAG)) == AppConfig()


def test_the_mechanism_imports_no_torch():
    code = "import sys, recon.config, recon.settings, tools.eval.options, app.config; assert 'torch' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
