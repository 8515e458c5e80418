"""The weights table (``backbone/weights.json``): every release is there, entries are well formed and unique, names
resolve, docs list them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from backbone import hub
from backbone.formats import FORMATS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "weights.md"

# The releases recon promises (issue 2, item 4); removing one must fail a test.
EXPECTED = {
    "mast3r": ["mast3r_vitl16_512"],
    "dust3r": ["dust3r_vitl16_512_dpt", "dust3r_vitl16_512_linear", "dust3r_vitl16_224_linear"],
    "dune": ["dune_vits14_336", "dune_vits14_448", "dune_vitb14_336", "dune_vitb14_448", "dune_vitb14_448_paper"],
    "dune_mast3r": ["dune_mast3r_vits14_448", "dune_mast3r_vitb14_448"],
    "mum": ["mum_vitl16", "mum_vitl16_decoder"],
    "dinov2": [f"dinov2_vit{s}14{r}" for s in "sblg" for r in ("", "_reg")],
    "recon": ["recon-tiny"],  # trained by recon itself, shipped inside the package (issue 18)
}


def test_every_official_release_is_in_the_table():
    assert {name for names in EXPECTED.values() for name in names} == set(hub.WEIGHTS)
    for family, names in EXPECTED.items():
        assert [e.name for e in hub.list_weights(family=family)] == names


@pytest.mark.parametrize("entry", list(hub.WEIGHTS.values()), ids=lambda e: e.name)
def test_entry_is_well_formed(entry):
    if entry.embedded:  # shipped inside the package: its file is there, with the recorded size and digest
        assert hub.target_path(entry.name).stat().st_size == entry.size and entry.sha256
    else:
        assert entry.url.startswith("https://") and entry.source.startswith("https://github.com/")
        assert entry.filename == entry.url.rsplit("/", 1)[-1] and entry.filename.endswith(".pth")
    assert entry.kind in hub.KINDS and entry.family in hub.FAMILIES and entry.format in FORMATS
    assert entry.image_size % entry.patch_size == 0 or entry.family in ("mast3r", "dust3r", "mum")
    assert entry.licence and entry.notes and entry.source
    assert entry.size is None or entry.size > 0
    assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)


def test_every_json_entry_has_the_required_fields_and_a_unique_name():
    raw = json.loads(hub.TABLE_FILE.read_text())["weights"]
    assert [e["name"] for e in raw] == list(hub.WEIGHTS)  # one entry per object, in file order
    for entry in raw:
        assert set(hub.REQUIRED_FIELDS) <= set(entry), entry["name"]
        assert ("url" in entry) != ("embedded" in entry), entry["name"]
    assert len({e["name"] for e in raw}) == len(raw)


def test_the_format_of_each_family():
    # What backbone.formats.detect_format says of each family's files (checked by verify).
    formats = {e.family: e.format for e in hub.WEIGHTS.values()}
    assert formats == {
        "mast3r": "mast3r", "dust3r": "dust3r", "dune": "dune", "dune_mast3r": "dune_mast3r", "mum": "mum",
        "dinov2": "dinov2", "recon": "recon-model",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.pop("licence"), r"lacks \['licence'\]"),
        (lambda e: e.update(colour="red"), r"unknown fields \['colour'\]"),
        (lambda e: e.update(embedded="backbone/x.pth"), "exactly one of 'url' and 'embedded'"),
        (lambda e: e.pop("url"), "exactly one of 'url' and 'embedded'"),
    ],
    ids=["missing", "unknown", "both", "neither"],
)
def test_malformed_table_is_refused(tmp_path, change, message):
    raw = json.loads(hub.TABLE_FILE.read_text())
    change(raw["weights"][3])
    (tmp_path / "w.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=message):
        hub.load_table(tmp_path / "w.json")


@pytest.mark.parametrize("field", ["name", "aliases"])
def test_repeated_name_or_alias_is_refused(tmp_path, field):
    raw = json.loads(hub.TABLE_FILE.read_text())
    first, other = raw["weights"][0], raw["weights"][5]
    if field == "name":
        other["name"] = first["name"]
    else:
        other["aliases"] = [*other.get("aliases", []), first["name"].upper()]
    (tmp_path / "w.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="repeats the name or alias"):
        hub.load_table(tmp_path / "w.json")


def test_file_names_and_aliases_are_unique():
    filenames = [e.filename for e in hub.WEIGHTS.values()]
    assert len(set(filenames)) == len(filenames)  # one cache folder holds them all
    aliases = [a.lower() for e in hub.WEIGHTS.values() for a in (e.name, *e.aliases)]
    assert len(set(aliases)) == len(aliases)


def test_licences_are_stated():
    assert "non-commercial" in hub.WEIGHTS["mast3r_vitl16_512"].licence.lower()
    assert "non-commercial" in hub.WEIGHTS["dust3r_vitl16_224_linear"].licence.lower()
    assert "non-commercial" in hub.WEIGHTS["dune_vitb14_448"].licence.lower()
    assert "non-commercial" in hub.WEIGHTS["dune_mast3r_vitb14_448"].licence.lower()
    assert "Apache 2.0" in hub.WEIGHTS["dinov2_vitl14_reg"].licence
    assert "MIT" in hub.WEIGHTS["mum_vitl16"].licence


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("dune_vitbase_14_448_paper_encoder", "dune_vitb14_448_paper"),  # what DUNE-MASt3R files name
        ("dune_vitsmall_14_448", "dune_vits14_448"),
        ("MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric.pth", "mast3r_vitl16_512"),
        ("mum_vitl16_decoderb", "mum_vitl16_decoder"),
        ("DINOV2_VITL14_REG", "dinov2_vitl14_reg"),
        ("dinov2_vitl14_reg4_pretrain", "dinov2_vitl14_reg"),
    ],
)
def test_aliases_resolve(alias, name):
    assert hub.find(alias).name == name


def test_dinov2_urls_follow_the_hub_pattern():
    assert hub.WEIGHTS["dinov2_vitl14_reg"].url == (
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth"
    )


def test_docs_list_every_name_url_and_licence():
    text = DOCS.read_text()
    for entry in hub.WEIGHTS.values():
        assert f"`{entry.name}`" in text, entry.name
        assert entry.embedded or f"({entry.url})" in text, entry.url
    for words in ("CC BY-NC-SA 4.0", "NLE DUNE", "Apache 2.0", "MIT", "RECON_HOME", "RECON_WEIGHTS_MIRROR"):
        assert words in text
    assert "--checkpoint PATH" in text and "~/.cache/recon/weights/" in text
