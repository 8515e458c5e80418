"""JSON dataclass configs: round trip, strict keys, type checks, overrides, field docs, presets."""

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
    merge_over,
    replace_sections,
    resolve_preset,
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


PRESETS = {"base": Outer(), "fast": Outer(name="fast", steps=2, roots={"a": "1", "b": "2"}, inner=Inner(lr=0.5))}


class TestPresets:
    def test_file_data_merges_over_the_preset(self):
        cfg = resolve_preset(Outer, PRESETS, "fast", {"inner": {"betas": [0.5, 0.6]}, "roots": {"c": "3"}})
        assert cfg.inner == Inner(lr=0.5, betas=(0.5, 0.6))  # the preset's lr kept
        assert cfg.roots == {"a": "1", "b": "2", "c": "3"} and cfg.name == "fast"
        assert resolve_preset(Outer, PRESETS, "fast") == PRESETS["fast"]

    def test_replace_whole_keys_drop_the_presets_entries(self):
        cfg = resolve_preset(Outer, PRESETS, "fast", {"roots": {"c": "3"}}, replace_whole=("roots",))
        assert cfg.roots == {"c": "3"} and cfg.inner.lr == 0.5

    @pytest.mark.parametrize(
        "preset, data, match",
        [
            ("slow", None, r"unknown preset 'slow'; available: \['base', 'fast'\]"),
            ("base", [1, 2], "config file: expected a JSON object, got list"),
            ("base", {"inner": {"lr": "x"}}, "inner.lr: expected a number"),
            ("base", {"nope": 1}, r"unknown key\(s\) \['nope'\]"),
        ],
    )
    def test_errors(self, preset, data, match):
        with pytest.raises(ConfigError, match=match):
            resolve_preset(Outer, PRESETS, preset, data)

    def test_merge_over_leaves_its_inputs_alone(self):
        base, update = {"a": {"x": 1, "y": 2}, "b": [1]}, {"a": {"y": 3}, "b": [2, 3]}
        assert merge_over(base, update) == {"a": {"x": 1, "y": 3}, "b": [2, 3]}
        assert base == {"a": {"x": 1, "y": 2}, "b": [1]} and update == {"a": {"y": 3}, "b": [2, 3]}
        assert merge_over(base, update, replace_whole=("a",)) == {"a": {"y": 3}, "b": [2, 3]}

    def test_replace_sections(self):
        cfg = replace_sections(PRESETS["fast"], inner={"betas": (0.1, 0.2)}, steps=7)
        assert cfg.inner == Inner(lr=0.5, betas=(0.1, 0.2)) and cfg.steps == 7 and cfg.name == "fast"
        assert replace_sections(cfg, roots={"z": "9"}).roots == {"z": "9"}  # a dict field is replaced, not merged


@pytest.mark.parametrize(
    "recipe, data, path, expected",
    [
        ("distill", {"student": {"depth": 3}}, ("student", "embed_dim"), 48),
        ("distill", {"teachers": [{"name": "t", "seed": 5}]}, ("teachers", 0, "random_overrides"), {}),  # list: whole
        ("finetune", {"model": {"backbone_overrides": {"depth": 2}}}, ("model", "backbone_overrides"), {"depth": 2}),
        ("finetune", {"model": {"decoder_depth": 11}}, ("model", "backbone_overrides"),
         {"embed_dim": 32, "depth": 1, "num_heads": 2}),
        ("mum", {"model": {"depth": 3}}, ("model", "embed_dim"), 64),
    ],
)  # fmt: skip
def test_recipe_configs_merge_files_over_their_smoke_preset(recipe, data, path, expected):
    import importlib

    resolve_config = importlib.import_module(f"training.{recipe}.config").resolve_config
    node = resolve_config("smoke", data)
    for part in path:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    assert node == expected
