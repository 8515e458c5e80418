"""Infinite distributed sampler (coverage, rank disjointness, resume) and the corrupt-image-tolerant dataset."""

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from training.common.data import (
    InfiniteDistributedSampler,
    RobustImageDataset,
    list_image_folder,
    read_file_list,
    split_item,
)
from training.common.distributed import all_gather_cat, get_world_size, init_distributed


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


class TestSampler:
    def test_ranks_partition_each_pass(self):
        length, world = 10, 3
        per_rank = [take(InfiniteDistributedSampler(length, rank=r, world_size=world, seed=1), 4) for r in range(3)]
        first_pass = sorted(sum(per_rank, []))
        # 12 slots for 10 items: every item at least once, 2 padded repeats
        assert set(first_pass) == set(range(10)) and len(first_pass) == 12

    def test_passes_differ_and_are_seeded(self):
        a = take(InfiniteDistributedSampler(8, rank=0, world_size=1, seed=4), 16)
        b = take(InfiniteDistributedSampler(8, rank=0, world_size=1, seed=4), 16)
        assert a == b and sorted(a[:8]) == list(range(8)) and a[:8] != a[8:]
        assert a != take(InfiniteDistributedSampler(8, rank=0, world_size=1, seed=5), 16)

    def test_resume_at_position_continues_the_stream(self):
        full = take(InfiniteDistributedSampler(7, rank=1, world_size=2, seed=2, with_seeds=True), 20)
        resumed = take(InfiniteDistributedSampler(7, rank=1, world_size=2, seed=2, with_seeds=True, position=9), 11)
        assert resumed == full[9:]
        seeds = [s for _, s in full]
        assert len(set(seeds)) == len(seeds)  # one seed per sample, never reused
        other_rank = take(InfiniteDistributedSampler(7, rank=0, world_size=2, seed=2, with_seeds=True), 20)
        assert not set(seeds) & {s for _, s in other_rank}

    def test_split_item(self):
        assert split_item(3) == (3, None) and split_item((3, 9)) == (3, 9)


def _transform(image, generator):
    arr = torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32) / 255).permute(2, 0, 1)
    return arr + 0 * torch.rand(1, generator=generator)


class TestRobustImageDataset:
    @pytest.fixture
    def folder(self, tmp_path):
        for i in range(4):
            Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(tmp_path / f"img{i}.png")
        (tmp_path / "img4.jpg").write_bytes(b"not an image")
        good = tmp_path / "img5.png"
        Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(good)
        good.write_bytes(good.read_bytes()[:40])  # truncated PNG
        (tmp_path / "notes.txt").write_text("ignored")
        (tmp_path / "sub").mkdir()
        Image.fromarray(np.full((6, 6, 3), 200, np.uint8)).save(tmp_path / "sub" / "deep.JPG")
        return tmp_path

    def test_folder_listing(self, folder):
        names = [p.name for p in list_image_folder(folder)]
        assert names == ["img0.png", "img1.png", "img2.png", "img3.png", "img4.jpg", "img5.png", "deep.JPG"]

    def test_corrupt_images_are_skipped_and_counted(self, folder):
        files = list_image_folder(folder)
        ds = RobustImageDataset(files, _transform, name="toy")
        items = [ds[(i, 123)] for i in range(len(ds))]
        assert [it["skipped"] for it in items] == [0, 0, 0, 0, 1, 1, 0]
        assert all(it["image"].shape == (3, 8, 8) for it in items)
        assert {it["dataset"] for it in items} == {"toy"}
        assert {p.rsplit("/", 1)[-1] for p in ds.failed} == {"img4.jpg", "img5.png"}
        assert items[4]["index"] not in (4, 5)  # replaced by a readable file

    def test_all_corrupt_raises(self, tmp_path):
        for i in range(3):
            (tmp_path / f"{i}.png").write_bytes(b"x")
        ds = RobustImageDataset(list_image_folder(tmp_path), _transform, max_retries=2)
        with pytest.raises(RuntimeError, match="unreadable images in a row"):
            ds[0]

    def test_file_list(self, folder):
        lst = folder / "list.txt"
        lst.write_text("# comment\nimg1.png\n\nsub/deep.JPG\n")
        assert read_file_list(lst) == [folder / "img1.png", folder / "sub" / "deep.JPG"]
        with pytest.raises(FileNotFoundError, match="file list not found"):
            read_file_list(folder / "missing.txt")


def test_single_process_fallback(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.backend, info.is_main) == (0, 1, None, True)
    t = torch.arange(3.0)
    assert get_world_size() == 1 and torch.equal(all_gather_cat(t), t)
