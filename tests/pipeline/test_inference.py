"""Batched pair inference: each image encoded once, both orders decoded, compact storage, spill and resume."""

import numpy as np
import pytest
import torch
from torch import nn

from recon.inference import InferenceConfig, PairStore, encode_views, run_inference
from recon.types import View


class CountingModel(nn.Module):
    """A stand-in binocular model whose outputs are a known function of the two images.

    ``encode`` returns per-patch mean colours; ``decode`` returns point maps that encode which image was view 1
    and which view 2, so a test can check that every prediction comes from the right pair in the right order.
    """

    patch_size = 4

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.encoded_images = 0
        self.decoded_pairs = 0

    def encode(self, images):
        self.encoded_images += images.shape[0]
        B, C, H, W = images.shape
        p = self.patch_size
        x = images.reshape(B, C, H // p, p, W // p, p).mean((3, 5))  # B C h w
        return x.flatten(2).transpose(1, 2) * self.scale  # B hw C

    def decode(self, f1, f2, shape1, shape2):
        self.decoded_pairs += f1.shape[0]

        def pred(f, other, shape, role):
            H, W = shape
            h, w = H // self.patch_size, W // self.patch_size
            g = f.transpose(1, 2).reshape(f.shape[0], -1, h, w)
            up = torch.nn.functional.interpolate(g, size=(H, W), mode="nearest").permute(0, 2, 3, 1)
            key = other.mean((1, 2))[:, None, None, None]  # depends on the other view: order matters
            return {
                "pts3d": up + role * key,  # view 1 and view 2 heads differ, as in MASt3R
                "conf": 1 + up.mean(-1),
                "desc": torch.nn.functional.normalize(up.repeat(1, 1, 1, 8), dim=-1),
                "desc_conf": up.mean(-1),
            }

        return pred(f1, f2, shape1, 1.0), pred(f2, f1, shape2, 2.0)


def make_views(n, shapes=((16, 24),)):
    g = torch.Generator().manual_seed(0)
    return [View(image=torch.rand(3, *shapes[k % len(shapes)], generator=g), idx=k, name=f"im{k}") for k in range(n)]


def reference_pair(model, views, i, j):
    f = [model.encode(v.image[None]) for v in (views[i], views[j])]
    return model.decode(f[0], f[1], views[i].true_shape, views[j].true_shape)


def test_each_image_encoded_once_and_both_orders_decoded():
    model = CountingModel()
    views = make_views(6)
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    store = run_inference(model, views, pairs, InferenceConfig(batch_size=4), progress=False)
    assert model.encoded_images == 6  # not 2 per ordered pair (60)
    assert model.decoded_pairs == 30
    assert len(store) == 30
    assert sorted(store.keys()) == sorted([(i, j) for i, j in pairs] + [(j, i) for i, j in pairs])


def test_predictions_match_unbatched_reference_in_fp16():
    model = CountingModel()
    views = make_views(4, shapes=((16, 24), (24, 16)))  # mixed orientation: shape groups batch separately
    pairs = [(0, 1), (1, 2), (0, 2), (2, 3)]
    store = run_inference(model, views, pairs, InferenceConfig(batch_size=3), progress=False)
    with torch.no_grad():
        for i, j in [(0, 1), (1, 0), (2, 3), (3, 2), (0, 2)]:
            p1, p2 = reference_pair(model, views, i, j)
            got = store.get(i, j)
            assert got.pts3d_i.dtype == torch.float16
            assert got.pts3d_i.shape == (*views[i].true_shape, 3)
            assert got.pts3d_j.shape == (*views[j].true_shape, 3)
            torch.testing.assert_close(got.pts3d_i.float(), p1["pts3d"][0], rtol=1e-3, atol=1e-3)
            torch.testing.assert_close(got.pts3d_j.float(), p2["pts3d"][0], rtol=1e-3, atol=1e-3)
            torch.testing.assert_close(got.conf_j.float(), p2["conf"][0], rtol=1e-3, atol=1e-3)
            torch.testing.assert_close(got.desc_i.float(), p1["desc"][0], rtol=1e-3, atol=1e-3)
    # (i, j) and (j, i) differ: the decoder is asymmetric
    assert not torch.equal(store.get(0, 1).pts3d_i, store.get(1, 0).pts3d_j)


def test_spill_to_disk_keeps_values(tmp_path):
    model = CountingModel()
    views = make_views(5)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    in_ram = run_inference(model, views, pairs, InferenceConfig(), progress=False)
    spilled = run_inference(
        model, views, pairs, InferenceConfig(cache_dir=tmp_path, max_ram_bytes=20_000), progress=False
    )
    assert spilled.ram_bytes <= 20_000
    assert len(list(spilled.folder.glob("*.safetensors"))) == 20
    for i, j in in_ram.keys():
        a, b = in_ram.get(i, j), spilled.get(i, j)
        for field in ("pts3d_i", "pts3d_j", "conf_i", "conf_j", "desc_i", "desc_j", "desc_conf_i", "desc_conf_j"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_resume_skips_cached_pairs(tmp_path):
    views = make_views(4)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2)]
    first = CountingModel()
    run_inference(first, views, pairs[:2], InferenceConfig(cache_dir=tmp_path), progress=False)  # "killed" early
    second = CountingModel()
    store = run_inference(second, views, pairs, InferenceConfig(cache_dir=tmp_path), progress=False)
    assert second.decoded_pairs == 4  # only (0,3),(3,0),(1,2),(2,1)
    assert second.encoded_images == 4  # views 0..3 are needed by the remaining pairs
    assert len(store) == 8
    # another image set never reads this cache
    other = make_views(4, shapes=((24, 24),))
    third = CountingModel()
    run_inference(third, other, pairs, InferenceConfig(cache_dir=tmp_path), progress=False)
    assert third.decoded_pairs == 8


def test_encode_views_groups_shapes():
    model = CountingModel()
    views = make_views(5, shapes=((16, 24), (24, 16), (16, 16)))
    feats = encode_views(model, views, batch_size=2, progress=False)
    assert [f.shape[0] for f in feats] == [24, 24, 16, 24, 24]
    np.testing.assert_allclose(feats[3].numpy(), model.encode(views[3].image[None])[0].detach().numpy())


def test_store_rejects_duplicate_pair():
    store = PairStore()
    model = CountingModel()
    views = make_views(2)
    pred = run_inference(model, views, [(0, 1)], progress=False)[0]
    store.append(pred)
    with pytest.raises(ValueError, match="stored twice"):
        store.append(pred)


class HugeConfModel(CountingModel):
    """Confidences far above float16's largest finite value (65504), as a confident network predicts."""

    def decode(self, f1, f2, shape1, shape2):
        p1, p2 = super().decode(f1, f2, shape1, shape2)
        for p in (p1, p2):
            p["conf"] = torch.full_like(p["conf"], 1e6)
            p["desc_conf"] = torch.full_like(p["desc_conf"], 1e6)
        return p1, p2


@pytest.mark.parametrize("storage", [torch.float16, torch.float32])
def test_confidences_never_overflow(storage):
    views = make_views(2)
    store = run_inference(HugeConfModel(), views, [(0, 1)], InferenceConfig(storage_dtype=storage), progress=False)
    for pred in store:
        for t in (pred.conf_i, pred.conf_j, pred.desc_conf_i, pred.desc_conf_j):
            assert t.dtype == torch.float32 and torch.all(t == 1e6)  # float16 would have stored inf
        assert pred.pts3d_i.dtype == storage and pred.desc_i.dtype == storage
    # and a weight of 1e6 is a weight, not zero: the canonical confidence stays finite and large
    from recon.align.confidence import view_confidences

    conf = view_confidences(2, list(store), "sparse")[0]
    assert np.isfinite(conf).all() and np.allclose(conf, 1e6 - 0.999)


def test_float16_would_overflow():
    # the failure this guards against: conf 1e6 in float16 is inf
    assert torch.isinf(torch.tensor(1e6).half())
