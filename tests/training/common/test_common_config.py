"""JSON dataclass configs: round trip, strict keys, type checks, overrides, field docs."""

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from training.common.config import (
    ConfigError,
    apply_overrides,
    describe,
    field_docs,
    from_dict,
    load_json,
    save_json,
    to_dict,
)


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    """Learning rate."""
    betas: tuple[float, float] = (0.9, 0.99)
    """Adam betas."""


@dataclass(frozen=True)
class Outer:
    name: str = "run"
    """Run name."""
    mode: Literal["a", "b"] = "a"
    """A choice."""
    steps: int = 10
    """Iterations."""
    resume: str | None = None
    """Optional path."""
    roots: dict[str, str] = field(default_factory=dict)
    """Free keys."""
    inner: Inner = field(default_factory=Inner)
    """Nested."""


class TestConfig:
    def test_round_trip_through_json(self, tmp_path):
        cfg = Outer(name="x", mode="b", steps=3, resume="p", roots={"k": "v"}, inner=Inner(lr=2.0, betas=(0.1, 0.2)))
        path = save_json(cfg, tmp_path / "c.json")
        assert json.loads(path.read_text())["inner"]["betas"] == [0.1, 0.2]
        assert load_json(Outer, path) == cfg

    def test_missing_keys_take_defaults(self):
        assert from_dict(Outer, {"inner": {"lr": 5}}) == Outer(inner=Inner(lr=5.0))

    def test_unknown_key_is_an_error_naming_valid_keys(self):
        with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\] in inner; valid keys: \['betas', 'lr'\]"):
            from_dict(Outer, {"inner": {"lrr": 1}})

    @pytest.mark.parametrize(
        "data, match",
        [
            ({"steps": 1.5}, "steps: expected an integer"),
            ({"steps": True}, "steps: expected an integer"),
            ({"mode": "c"}, r"mode: 'c' is not one of \['a', 'b'\]"),
            ({"inner": {"betas": [1, 2, 3]}}, r"inner.betas: expected 2 values, got 3"),
            ({"inner": 3}, "inner: expected an object"),
            ({"resume": 3}, "resume: 3 matches none of"),
        ],
    )
    def test_type_errors_name_the_field(self, data, match):
        with pytest.raises(ConfigError, match=match):
            from_dict(Outer, data)

    def test_invalid_json_reports_position(self, tmp_path):
        bad = tmp_path / "bad.json"
        bad.write_text('{"steps": 3,\n "name": }')
        with pytest.raises(ConfigError, match="line 2"):
            load_json(Outer, bad)

    def test_overrides(self):
        cfg = apply_overrides(Outer(), ["inner.lr=0.5", "name=hello", "resume=null", "roots.extra=/data", "steps=7"])
        assert cfg.inner.lr == 0.5 and cfg.name == "hello" and cfg.resume is None and cfg.steps == 7
        assert cfg.roots == {"extra": "/data"}
        with pytest.raises(ConfigError, match="no field 'inner.lrr'"):
            apply_overrides(Outer(), ["inner.lrr=1"])
        with pytest.raises(ConfigError, match="not of the form"):
            apply_overrides(Outer(), ["inner.lr"])

    def test_field_docs_and_describe(self):
        assert field_docs(Inner) == {"lr": "Learning rate.", "betas": "Adam betas."}
        rows = {name: (default, doc) for name, default, doc in describe(Outer)}
        assert rows["inner.betas"] == ("[0.9, 0.99]", "Adam betas.")
        assert rows["mode"] == ('"a"', "A choice.")

    def test_to_dict_is_plain(self):
        assert to_dict(Inner()) == {"lr": 1e-3, "betas": [0.9, 0.99]}
