"""Layer building blocks: RoPE rotations computed by hand, position-embedding resampling, SwiGLU width."""

import math

import pytest
import torch

from backbone.layers import AxialRoPE, CroCoRoPE2D, interpolate_pos_embed
from backbone.layers.mlp import SwiGLUFFN, swiglu_hidden_dim


class TestCroCoRoPE2D:
    def test_hand_computed_rotation(self):
        # head_dim 4: channels (0, 1) rotate by the row y, (2, 3) by the column x, frequency 1.
        rope = CroCoRoPE2D(head_dim=4).for_grid(2, 3, torch.device("cpu"))
        x = torch.zeros(1, 1, 6, 4)
        x[0, 0, 5] = torch.tensor([1.0, 0.0, 0.0, 1.0])  # token 5 = (y=1, x=2)
        out = rope(x)[0, 0, 5]
        expected = torch.tensor([math.cos(1), math.sin(1), -math.sin(2), math.cos(2)])
        torch.testing.assert_close(out, expected)

    def test_relative_positions_only(self):
        # q.k after RoPE depends on the position difference: same offsets on different grids agree.
        head_dim = 16
        rope = CroCoRoPE2D(head_dim)
        q, k = torch.randn(head_dim), torch.randn(head_dim)
        small = rope.for_grid(2, 2, torch.device("cpu"))
        big = rope.for_grid(4, 5, torch.device("cpu"))

        def dot(fn, n, i, j):
            qs = torch.zeros(1, 1, n, head_dim)
            ks = torch.zeros(1, 1, n, head_dim)
            qs[0, 0, i], ks[0, 0, j] = q, k
            return (fn(qs)[0, 0, i] * fn(ks)[0, 0, j]).sum()

        # (0,0)->(1,1) on a 2x2 grid vs (2,3)->(3,4) on a 4x5 grid
        torch.testing.assert_close(dot(small, 4, 0, 3), dot(big, 20, 2 * 5 + 3, 3 * 5 + 4), rtol=1e-5, atol=1e-5)

    def test_prefix_untouched(self):
        rope = CroCoRoPE2D(8).for_grid(1, 2, torch.device("cpu"), num_prefix=1)
        x = torch.randn(1, 2, 3, 8)
        torch.testing.assert_close(rope(x)[:, :, 0], x[:, :, 0], rtol=0, atol=0)


class TestAxialRoPE:
    def test_periods(self):
        rope = AxialRoPE(head_dim=64)
        expected = torch.tensor([100 ** (i / 16) for i in range(16)])
        torch.testing.assert_close(rope.periods, expected)

    def test_hand_computed_rotation(self):
        # head_dim 4: one period (1); 1x2 grid -> y coordinate 0, x coordinates -0.5 and 0.5 (angle -pi, pi).
        # Pairs: (0, 2) rotate by the y angle, (1, 3) by the x angle.
        rope = AxialRoPE(head_dim=4).for_grid(1, 2, num_prefix=1)
        x = torch.zeros(1, 1, 3, 4)
        x[0, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # cls: not rotated
        x[0, 0, 2] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # patch (0, 1): x angle pi
        out = rope(x)[0, 0]
        torch.testing.assert_close(out[0], torch.tensor([1.0, 2.0, 3.0, 4.0]))
        torch.testing.assert_close(out[2], torch.tensor([0.0, -1.0, 0.0, 0.0]), rtol=0, atol=1e-6)

    def test_bf16_rounds_the_rotation(self):
        x = torch.randn(1, 2, 5, 8)
        fp32 = AxialRoPE(8).for_grid(2, 2, num_prefix=1)(x)
        bf16 = AxialRoPE(8, dtype=torch.bfloat16).for_grid(2, 2, num_prefix=1)(x)
        assert bf16.dtype == torch.float32
        # cls rows are only cast to bf16 and back, as in the official attention
        torch.testing.assert_close(bf16[:, :, 0], x[:, :, 0].bfloat16().float(), rtol=0, atol=0)
        assert 0 < (bf16 - fp32).abs().max() < 0.05


class TestInterpolatePosEmbed:
    def test_same_grid_is_identity(self):
        pos = torch.randn(1, 1 + 16, 8)
        assert interpolate_pos_embed(pos, 4, 4) is pos

    @pytest.mark.parametrize("offset", [0.1, 0.0])
    def test_constant_stays_constant_and_cls_kept(self, offset):
        pos = torch.full((1, 1 + 9, 4), 0.25)
        pos[:, 0] = 7.0
        out = interpolate_pos_embed(pos, 5, 2, offset=offset, antialias=offset == 0.0)
        assert out.shape == (1, 1 + 10, 4)
        torch.testing.assert_close(out[:, 1:], torch.full((1, 10, 4), 0.25))
        torch.testing.assert_close(out[:, 0], torch.full((1, 4), 7.0))

    def test_rows_and_columns_are_not_swapped(self):
        # A table varying only along rows must still vary only along rows on a non-square target grid.
        rows = torch.arange(4.0).view(4, 1).expand(4, 4).reshape(1, 16, 1)
        pos = torch.cat((torch.zeros(1, 1, 1), rows), dim=1)
        out = interpolate_pos_embed(pos, 6, 3)[0, 1:, 0].view(6, 3)
        torch.testing.assert_close(out, out[:, :1].expand(6, 3))
        assert (out[1:, 0] > out[:-1, 0]).all()


def test_swiglu_width_of_vitg():
    assert swiglu_hidden_dim(4 * 1536) == 4096
    ffn = SwiGLUFFN(1536, 4 * 1536)
    assert ffn.w12.weight.shape == (8192, 1536) and ffn.w3.weight.shape == (1536, 4096)
