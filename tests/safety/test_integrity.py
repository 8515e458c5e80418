"""Integrity: the pair cache is keyed by the checkpoint's content, and cached weights are checked by sha256.

Before: the pair cache (``--cache-dir``) was keyed by the checkpoint's *path*, so overwriting the file and rerunning
silently reused the old model's predictions; a cached named weights file was only size-checked.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
import torch

import recon
from backbone import download, hub
from recon.inference import InferenceConfig, run_inference
from recon.model.decoder import DecoderConfig
from recon.model.heads import HeadConfig
from recon.model.loading import save_model
from recon.model.presets import build_model
from recon.types import View

from .helpers import one_line


def _tiny(seed: int):
    torch.manual_seed(seed)
    return build_model(
        "mast3r_tiny",
        backbone_overrides={"embed_dim": 32, "depth": 1, "num_heads": 2},
        decoder=DecoderConfig(embed_dim=32, depth=10, num_heads=2),
        head=HeadConfig(dpt_feature_dim=16, dpt_layer_dims=(8, 8, 8, 8)),
    )


def _views(n: int = 3, size: int = 32) -> list[View]:
    g = torch.Generator().manual_seed(7)
    return [View(image=torch.rand(3, size, size, generator=g), idx=k, name=f"v{k}") for k in range(n)]


def _run(model, cache, **kw):
    calls = []
    decode = model.decode
    model.decode = lambda *a: calls.append(1) or decode(*a)  # count decoder calls on this instance
    store = run_inference(model, _views(**kw), [(0, 1), (1, 2)], InferenceConfig(cache_dir=cache), progress=False)
    return store, len(calls)


def test_overwritten_checkpoint_does_not_reuse_old_predictions(tmp_path):
    ckpt, cache = tmp_path / "model.pth", tmp_path / "cache"
    save_model(_tiny(1), ckpt)
    first, n_first = _run(recon.load_model(ckpt), cache)
    again, n_again = _run(recon.load_model(ckpt), cache)  # same file: everything comes from the cache
    assert n_first > 0 and n_again == 0 and again.folder == first.folder
    save_model(_tiny(2), ckpt)  # same path, other weights (the reported bug: old predictions came back)
    other, n_other = _run(recon.load_model(ckpt), cache)
    assert n_other > 0 and other.folder != first.folder
    assert not torch.equal(other.get(0, 1).pts3d_i, first.get(0, 1).pts3d_i)


def test_settings_that_change_predictions_change_the_key(tmp_path):
    ckpt, cache = tmp_path / "model.pth", tmp_path / "cache"
    save_model(_tiny(1), ckpt)
    base, _ = _run(recon.load_model(ckpt), cache)
    bigger, n = _run(recon.load_model(ckpt), cache, size=48)  # image size
    assert n > 0 and bigger.folder != base.folder
    half = recon.load_model(ckpt, dtype=torch.bfloat16)  # precision
    lower, n = _run(half, cache)
    assert n > 0 and lower.folder != base.folder
    store = run_inference(
        recon.load_model(ckpt), _views(), [(0, 1)], InferenceConfig(cache_dir=cache, storage_dtype=torch.float32),
        progress=False,
    )  # fmt: skip
    assert store.folder != base.folder  # storage precision


def test_in_memory_model_is_keyed_by_its_weights(tmp_path):
    model = _tiny(1)
    first, _ = _run(model, tmp_path)
    with torch.no_grad():
        model.head1.dpt.head[0].weight.add_(0.5)
    second, n = _run(model, tmp_path)
    assert n > 0 and second.folder != first.folder


def test_file_digest_is_memoised_by_path_size_and_mtime(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    hashed = []
    real = download.sha256_file
    monkeypatch.setattr(download, "sha256_file", lambda p: hashed.append(p) or real(p))
    d1 = download.file_digest(path, tmp_path)
    assert download.file_digest(path, tmp_path) == d1 == hashlib.sha256(b"a" * 1000).hexdigest()
    assert len(hashed) == 1  # the second call came from the memo
    path.write_bytes(b"b" * 1000)  # same size, new mtime
    assert download.file_digest(path, tmp_path) == hashlib.sha256(b"b" * 1000).hexdigest()
    (tmp_path / download.DIGESTS_FILE).write_text("{broken")  # a damaged memo is rebuilt, never trusted
    assert download.file_digest(path, tmp_path) == hashlib.sha256(b"b" * 1000).hexdigest()


@pytest.fixture
def cached_entry(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    data = b"released weights" * 100
    entry = replace(
        hub.WEIGHTS["mum_vitl16"], name="tiny", url="http://127.0.0.1:9/tiny.bin", filename="tiny.bin", aliases=(),
        size=len(data), sha256=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip
    monkeypatch.setitem(hub.WEIGHTS, "tiny", entry)
    hub.weights_dir().mkdir(parents=True)
    return hub.weights_dir() / "tiny.bin", data


def test_cached_release_is_verified_by_sha256(cached_entry):
    path, data = cached_entry
    path.write_bytes(data)
    assert hub.get_weights("tiny", download=False) == path
    corrupt = bytearray(data)
    corrupt[5] ^= 0x01  # same size: the size check alone passed this before
    path.write_bytes(bytes(corrupt))
    with pytest.raises(hub.WeightsIntegrityError, match="does not have the sha256 of tiny") as info:
        hub.get_weights("tiny", download=False)
    assert "--force" in one_line(info.value)
    assert path.read_bytes() == bytes(corrupt)  # reported, not deleted: the user decides


def test_a_damaged_cached_pair_is_computed_again(tmp_path):
    ckpt, cache = tmp_path / "model.pth", tmp_path / "cache"
    save_model(_tiny(1), ckpt)
    first, _ = _run(recon.load_model(ckpt), cache)
    reference = first.get(1, 0).pts3d_i.clone()
    damaged = first.folder / "pair_00001_00000.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:50])  # cut short: header unreadable
    again, n = _run(recon.load_model(ckpt), cache)
    assert n == 1  # one decoder call (a batch) recomputed the damaged pair, nothing crashed
    assert torch.equal(again.get(1, 0).pts3d_i, reference)
