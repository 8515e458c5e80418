"""Sequences per dataset (scenes, chunks, overlap chains, CO3D) and frame-budget batches."""

import gzip
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from training.mum.batches import BatchPlan, MultiViewBatches
from training.mum.config import DataConfig, DatasetConfig
from training.mum.sequences import DataConfigError, Source, build_source, chunk, overlap_chains


def _write_images(folder, names, size=(20, 16)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((size[1], size[0], 3), 10 * i, np.uint8)).save(folder / name)


def test_chunks_of_ordered_frames():
    frames = list(range(250))
    chunks = chunk(frames, 100)
    assert [len(c) for c in chunks] == [100, 100, 50]
    assert chunks[1][0] == 100 and chunks[2][-1] == 249
    assert chunk(list(range(201)), 100) == [list(range(100)), list(range(100, 200))]  # a 1-frame tail is dropped


def test_overlap_chain_follows_the_best_neighbour():
    # 0-1 (0.9), 1-2 (0.8), 1-3 (0.5), 2-3 (0.7), 0-4 (0.05: below the threshold)
    pairs = [(0, 1, 0.9), (1, 2, 0.8), (1, 3, 0.5), (2, 3, 0.7), (0, 4, 0.05)]
    rng = np.random.default_rng(0)
    chains = overlap_chains(5, pairs, num_chains=5, max_length=10, min_overlap=0.1, rng=rng)
    by_anchor = {c[0]: c for c in chains}
    assert by_anchor[0] == [0, 1, 2, 3]
    assert by_anchor[3] == [3, 2, 1, 0]
    assert 4 not in by_anchor  # frame 4 overlaps nothing above 0.1
    short = overlap_chains(5, pairs, num_chains=5, max_length=2, min_overlap=0.1, rng=rng)
    assert all(len(c) == 2 for c in short)


def test_folder_source_orders_frames_naturally_and_groups_by_mode(tmp_path):
    _write_images(tmp_path / "scene_a", [f"f{i}.png" for i in (10, 2, 1)])
    _write_images(tmp_path / "scene_b", [f"{i:03d}.jpg" for i in range(7)])
    _write_images(tmp_path / "scene_c", ["x.png"])  # one frame: no sequence
    src = build_source(DatasetConfig(name="f", kind="folder", root=str(tmp_path), chunk_length=3))
    names = [[p.rsplit("/", 1)[-1] for p in s] for s in src.sequences]
    assert names[0] == ["f1.png", "f2.png", "f10.png"]  # scene of 3 <= chunk_length: whole scene
    # scene_b: chunks of 3, the 1-frame tail dropped
    assert names[1:] == [["000.jpg", "001.jpg", "002.jpg"], ["003.jpg", "004.jpg", "005.jpg"]]
    scenes = build_source(DatasetConfig(name="f", kind="folder", root=str(tmp_path), sequences="scene"))
    assert sorted(len(s) for s in scenes.sequences) == [3, 7]


def test_folder_source_uses_overlap_files(tmp_path):
    _write_images(tmp_path / "s", ["a.png", "b.png", "c.png"])
    pairs = [["a.png", "c.png", 0.9], ["c.png", "b.png", 0.6]]
    (tmp_path / "s" / "overlaps.json").write_text(json.dumps({"pairs": pairs}))
    src = build_source(DatasetConfig(name="o", kind="folder", root=str(tmp_path), chains_per_scene=3))
    names = {tuple(p.rsplit("/", 1)[-1] for p in s) for s in src.sequences}
    assert ("a.png", "c.png", "b.png") in names
    (tmp_path / "s" / "overlaps.json").write_text(json.dumps({"pairs": [["a.png", "zz.png", 0.9]]}))
    with pytest.raises(DataConfigError, match="zz.png"):
        build_source(DatasetConfig(name="o", kind="folder", root=str(tmp_path)))


def test_co3d_source_groups_frames_by_sequence_in_frame_order(tmp_path):
    cat = tmp_path / "teddybear"
    anns = []
    for seq, n in (("s1", 5), ("s2", 3)):
        names = [f"frame{k:06d}.jpg" for k in range(n)]
        _write_images(cat / seq / "images", names)
        for k in reversed(range(n)):  # annotation order must not matter
            path = f"teddybear/{seq}/images/{names[k]}"
            anns.append({"sequence_name": seq, "frame_number": k, "image": {"path": path}})
    with gzip.open(cat / "frame_annotations.jgz", "wt") as f:
        json.dump(anns, f)
    src = build_source(DatasetConfig(name="co3d", kind="co3d", root=str(tmp_path), chunk_length=4))
    lengths = sorted(len(s) for s in src.sequences)
    assert lengths == [3, 4]  # s1 cut into a chunk of 4 (tail of 1 dropped), s2 whole
    s1 = next(s for s in src.sequences if len(s) == 4)
    assert [p.rsplit("/", 1)[-1] for p in s1] == [f"frame{k:06d}.jpg" for k in range(4)]
    assert src.load(s1[0]).size == (20, 16)


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DataConfigError, match="folder not found"):
        build_source(DatasetConfig(name="x", kind="folder", root=str(tmp_path / "nope")))


class _ArraySource(Source):
    """Frames are indices; each frame is a constant image whose value encodes (sequence, frame)."""

    def load(self, ref):
        return Image.fromarray(np.full((24, 30, 3), ref % 256, np.uint8))


def _sources():
    long = _ArraySource("long", [list(range(k * 30, k * 30 + 30)) for k in range(3)], weight=3.0)
    short = _ArraySource("short", [[200 + k, 210 + k] for k in range(4)], weight=1.0)
    return [long, short]


def test_every_batch_respects_the_frame_budget_and_the_view_range():
    cfg = DataConfig(frame_budget=96, views=(2, 24), image_size=16, single_view_prob=0.1)
    plan = BatchPlan(cfg, seed=0, max_sequence_length=30)
    counts = {}
    for it in range(3000):
        n, S = plan.batch_shape(it)
        assert S == 1 or 2 <= S <= 24
        assert n * S <= 96 and n == 96 // S
        counts[S] = counts.get(S, 0) + 1
    assert 0.08 < counts[1] / 3000 < 0.12  # 10 % single-view batches
    assert set(counts) == {1, *range(2, 25)}  # every S occurs
    batches = MultiViewBatches(_sources(), [], DataConfig(frame_budget=12, views=(2, 6), image_size=16), seed=1)
    for it in range(40):
        item = batches[it]
        n, S = batches.plan.batch_shape(it)
        assert item["images"].shape == (n, S, 3, 16, 16) and item["views"] == S and n * S <= 12


def test_batches_are_a_function_of_seed_iteration_and_rank():
    cfg = DataConfig(frame_budget=12, views=(2, 6), image_size=16)
    a = MultiViewBatches(_sources(), [], cfg, seed=5, rank=0)
    b = MultiViewBatches(_sources(), [], cfg, seed=5, rank=0)
    r1 = MultiViewBatches(_sources(), [], cfg, seed=5, rank=1)
    for it in (3, 0, 7):  # any order
        assert torch.equal(a[it]["images"], b[it]["images"])
        assert a[it]["images"].shape == r1[it]["images"].shape  # same shape on every rank ...
    assert any(not torch.equal(a[it]["images"], r1[it]["images"]) for it in range(5))  # ... different frames


def test_sequences_come_from_one_sequence_and_respect_weights():
    cfg = DataConfig(frame_budget=12, views=(2, 2), image_size=8, rrc_scale=(1.0, 1.0), rrc_ratio=(1.25, 1.25),
                     hflip=0.0, single_view_prob=0.0)  # fmt: skip
    batches = MultiViewBatches(_sources(), [], cfg, seed=0)
    from_long = total = 0
    for it in range(60):
        values = (batches[it]["images"][:, :, 0, 0, 0] * 255).round().long()  # n S: frame refs % 256
        for a, b in values.tolist():
            assert a < b  # distinct frames, in sequence order
            same_long = a < 90 and b < 90 and a // 30 == b // 30
            same_short = a >= 200 and b >= 200 and (a - 200) % 10 == (b - 200) % 10
            assert same_long or same_short
            from_long += same_long
            total += 1
    assert 0.65 < from_long / total < 0.85  # weights 3 : 1


def test_view_range_is_clamped_to_the_longest_sequence(caplog):
    short = [_ArraySource("short", [[1, 2, 3]])]
    with caplog.at_level(logging.WARNING):
        batches = MultiViewBatches(short, [], DataConfig(frame_budget=12, views=(2, 24), image_size=8), seed=0)
    assert batches.plan.views == (2, 3) and "exceeds the longest sequence" in caplog.text
    with pytest.raises(DataConfigError, match="longest sequence"):
        MultiViewBatches(short, [], DataConfig(frame_budget=12, views=(4, 6), image_size=8), seed=0)


def test_single_view_batches_draw_from_single_view_sources():
    singles = [_ArraySource("imagenet", [[250], [251]])]
    cfg = DataConfig(frame_budget=6, views=(2, 3), image_size=8, single_view_prob=1.0, rrc_scale=(1.0, 1.0),
                     rrc_ratio=(1.25, 1.25))  # fmt: skip
    item = MultiViewBatches(_sources(), singles, cfg, seed=0)[0]
    assert item["images"].shape == (6, 1, 3, 8, 8)
    assert set((item["images"][:, 0, 0, 0, 0] * 255).round().long().tolist()) <= {250, 251}


def test_synthetic_source_renders_scenes_once():
    cfg = DatasetConfig(name="s", kind="synthetic", synthetic_scenes=2, synthetic_views=3, synthetic_size=24)
    src = build_source(cfg)
    assert [len(s) for s in src.sequences] == [3, 3]
    assert src.load(src.sequences[1][2]).size == (24, 24)
