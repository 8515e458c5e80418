"""The MASt3R mixture syntax (parsed, never evaluated), exact per-epoch proportions, determinism, mid-epoch resume."""

import itertools
from collections import Counter

import numpy as np
import pytest

from training.common.data import InfiniteDistributedSampler
from training.datasets.mixture import MixtureError, build_pair_mixture, parse_mixture
from training.finetune.config import DataConfig

README = (
    "57_000 @ Habitat512(1_000_000, split='train', resolution=[(512, 384), (512, 336)], aug_crop='auto', "
    "aug_monocular=0.005, transform='ColorJitter', n_corres=8192, nneg=0.5) + 68_400 @ BlendedMVS(split='train', "
    "mask_sky=True) + Co3d(split='train', mask_bg='rand')"
)


class TestParse:
    def test_readme_terms(self):
        terms = parse_mixture(README)
        assert [(t.dataset, t.count) for t in terms] == [("Habitat512", 57_000), ("BlendedMVS", 68_400), ("Co3d", None)]
        assert terms[0].kwargs == {"size": 1_000_000, "split": "train"}  # resolution: global in recon, dropped
        assert terms[0].aug == {"aug_crop": "auto", "aug_monocular": 0.005, "transform": "ColorJitter",
                                "n_corres": 8192, "nneg": 0.5}  # fmt: skip
        assert terms[1].kwargs == {"split": "train"} and terms[2].kwargs == {"split": "train", "mask_bg": "rand"}

    @pytest.mark.parametrize(
        "text, message",
        [
            ("100 @ Co3d(root=__import__('os').getcwd())", "only literal values"),
            ("100 @ Co3d(**{'root': 'x'})", "'\\*\\*' arguments"),
            ("-3 @ Co3d()", "positive integer"),
            ("1.5 @ Co3d()", "positive integer"),
            ("100 * Co3d()", "expected 'N @ Dataset"),
            ("os.system('x')", "expected 'N @ Dataset"),
            ("100 @ Co3d(", "syntax error"),
            ("Co3d(1)", "takes 0 positional"),
            ("", "empty"),
        ],
    )
    def test_rejected(self, text, message):
        with pytest.raises(MixtureError, match=message):
            parse_mixture(text)

    def test_unknown_dataset_and_argument(self, tmp_path):
        data = DataConfig()
        with pytest.raises(MixtureError, match="unknown dataset 'Nope'; known: .*BlendedMVS"):
            build_pair_mixture("10 @ Nope(root='x')", data)
        with pytest.raises(MixtureError, match=r"Co3d: unknown argument\(s\) \['colour'\]"):
            build_pair_mixture(f"10 @ Co3d(root='{tmp_path}', colour=1)", data)


SYNTH = "Synthetic(scenes={s}, views_per_scene=4, size=(48, 36), seed={seed})"


def mixture(counts=(30, 10)):
    text = f"{counts[0]} @ {SYNTH.format(s=3, seed=0)} + {counts[1]} @ {SYNTH.format(s=2, seed=50)}"
    return build_pair_mixture(text, DataConfig(n_corres=16, aug_monocular=0.0))


class TestSampling:
    def test_exact_proportions_per_epoch(self):
        mix = mixture()
        assert len(mix) == 40 and mix.sizes == [30, 10]
        sampler = InfiniteDistributedSampler(len(mix), rank=0, world_size=1, seed=3, with_seeds=True)
        for epoch in range(2):
            items = list(itertools.islice(iter(sampler), epoch * 40, (epoch + 1) * 40))
            assert Counter(mix.locate(i)[0] for i, _ in items) == {0: 30, 1: 10}

    def test_downsampled_term_reaches_every_pair(self):
        # 3 indices over 12 pairs (3 scenes x 4 views): each index draws inside its stratum of 4 pairs.
        mix = build_pair_mixture(f"3 @ {SYNTH.format(s=3, seed=0)}", DataConfig(n_corres=16))
        seen = {mix.locate(j, seed)[1] for j in range(3) for seed in range(200)}
        assert seen == set(range(12))
        assert [mix.locate(j)[1] for j in range(3)] == [0, 4, 8]  # strata of 4 pairs

    def test_deterministic_and_resumable_mid_epoch(self):
        mix = mixture()
        run = InfiniteDistributedSampler(len(mix), rank=1, world_size=2, seed=7, with_seeds=True)
        full = list(itertools.islice(iter(run), 30))
        resumed = InfiniteDistributedSampler(len(mix), rank=1, world_size=2, seed=7, with_seeds=True, position=13)
        assert list(itertools.islice(iter(resumed), 17)) == full[13:]
        (i, seed) = full[15]
        a, b = mix[(i, seed, (28, 21))], mix[(i, seed, (28, 21))]
        for key in ("img", "pts3d", "corres"):
            np.testing.assert_array_equal(a["view1"][key].numpy(), b["view1"][key].numpy())
        assert a["dataset"] == "synthetic"

    def test_term_augmentation_overrides(self):
        mix = build_pair_mixture("4 @ Synthetic(scenes=1, views_per_scene=2, size=(48, 36), aug_monocular=1.0, "
                                 "transform='ImgNorm', aug_crop=False, n_corres=8)", DataConfig())  # fmt: skip
        ds = mix.datasets[0]
        assert (ds.aug_monocular, ds.color_jitter, ds.aug_crop, ds.n_corres) == (1.0, False, "centred", 8)
        s = mix[(0, 5, (28, 21))]
        np.testing.assert_array_equal(s["view1"]["img"].numpy(), s["view2"]["img"].numpy())  # monocular pair


def test_readme_mixture_round_trip():
    from training.datasets.mixture import MAST3R_README_TERMS, mast3r_mixture

    # README sum 698,820 pairs/epoch minus StaticThings3D and the internal set.
    assert sum(c for c, _, _ in MAST3R_README_TERMS) == 698_820 - 22_800 - 34_200
    text = mast3r_mixture({"MegaDepth": "/d/md", "NianticMapFree": "/d/mf"},
                          NianticMapFree={"depth_suffix": ".depth.png"})  # fmt: skip
    terms = parse_mixture(text)
    assert [(t.count, t.dataset) for t in terms] == [(68_400, "MegaDepth"), (145_920, "NianticMapFree")]
    assert terms[1].kwargs == {"root": "/d/mf", "split": "train", "depth_suffix": ".depth.png"}
    with pytest.raises(MixtureError, match="not in the MASt3R mixture"):
        mast3r_mixture({"StaticThings3D": "/x"})


def test_finetune_data_config_uses_the_mixture():
    from training.finetune.train import build_train_dataset

    mix = build_train_dataset(DataConfig(mixture=f"7 @ {SYNTH.format(s=1, seed=0)}", n_corres=8))
    assert len(mix) == 7 and mix.datasets[0].aug_crop == "auto" and mix.datasets[0].aug_monocular == 0.005
