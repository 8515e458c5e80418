"""The feed-forward model: shapes, input checks, frozen encoder, camera parametrisation round trip."""

import math

import pytest
import torch

import backbone
from recon.feedforward import build_model, decode_pose, encode_pose


def tiny_model():
    torch.manual_seed(0)
    return build_model(backbone.create("dune_vits14", depth=1, embed_dim=32, num_heads=2), "small")


class TestShapes:
    @pytest.mark.parametrize("views", [1, 2, 3, 4])
    def test_all_outputs(self, views):
        m = tiny_model()
        out = m(torch.rand(2, views, 3, 28, 42))
        assert len(out.pose_enc) == m.config.camera_iterations
        assert all(p.shape == (2, views, 9) for p in out.pose_enc)
        assert out.depth.shape == out.depth_conf.shape == out.pts_conf.shape == (2, views, 28, 42)
        assert out.pts3d.shape == (2, views, 28, 42, 3)
        assert (out.depth > 0).all() and (out.depth_conf > 1).all() and (out.pts_conf > 1).all()

    def test_sequences_are_independent(self):
        m = tiny_model().eval()
        x = torch.rand(2, 3, 3, 28, 28)
        both = m(x).pose_enc[-1]
        alone = m(x[1:]).pose_enc[-1]
        torch.testing.assert_close(both[1:], alone, rtol=1e-4, atol=1e-5)

    def test_views_interact(self):
        """Global attention: changing view 2 changes the camera of view 1."""
        m = tiny_model().eval()
        x = torch.rand(1, 3, 3, 28, 28)
        y = x.clone()
        y[0, 2] = torch.rand(3, 28, 28)
        assert not torch.allclose(m(x).pose_enc[-1][0, 1], m(y).pose_enc[-1][0, 1])

    def test_dpt_hooks(self):
        from recon.feedforward import FeedForwardConfig

        assert FeedForwardConfig().dpt_hooks == [5, 11, 17, 23]  # 24 pairs (VGGT reads 4, 11, 17, 23)
        assert FeedForwardConfig(embed_dim=64, depth=4, num_heads=4).dpt_hooks == [0, 0, 1, 1]
        assert FeedForwardConfig(embed_dim=64, depth=16, num_heads=4).dpt_hooks == [1, 3, 5, 7]

    @pytest.mark.parametrize("head", ["dpt", "mlp"])
    def test_heads_on_a_patch_16_encoder(self, head):
        import dataclasses

        from recon.feedforward import PRESETS

        torch.manual_seed(0)
        enc = backbone.create("mum_vitl16", depth=1, embed_dim=32, num_heads=2)
        m = build_model(enc, dataclasses.replace(PRESETS["small"], dense_head=head))
        assert (type(m.depth_head).__name__ == "FeedForwardDPT") == (head == "dpt")
        out = m(torch.rand(1, 2, 3, 48, 32))
        assert out.depth.shape == (1, 2, 48, 32) and out.pts3d.shape == (1, 2, 48, 32, 3)


class TestInputChecks:
    def test_not_a_batch_of_sequences(self):
        with pytest.raises(ValueError, match=r"\[B, V, 3, H, W\] \(one aspect ratio per call\)"):
            tiny_model()(torch.rand(3, 3, 28, 28))

    def test_not_a_patch_multiple(self):
        with pytest.raises(ValueError, match="not a multiple of the encoder's patch size 14"):
            tiny_model()(torch.rand(1, 2, 3, 28, 30))

    def test_unknown_preset(self):
        with pytest.raises(ValueError, match="unknown feed-forward preset 'huge'"):
            build_model(backbone.create("dune_vits14", depth=1, embed_dim=32, num_heads=2), "huge")


class TestFrozenEncoder:
    def test_gradient_reaches_only_aggregator_and_heads(self):
        m = tiny_model().train()
        assert not m.encoder.training
        before = {k: v.clone() for k, v in m.encoder.state_dict().items()}
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        out = m(torch.rand(1, 2, 3, 28, 28))
        (out.pose_enc[-1].sum() + out.depth.mean() + out.pts3d.mean() + out.pts_conf.mean()).backward()
        for name, p in m.named_parameters():
            if name.startswith("encoder."):
                assert p.grad is None and not p.requires_grad, name
            else:
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
        opt.step()
        for k, v in m.encoder.state_dict().items():
            assert torch.equal(v, before[k]), k
        assert not any(k.startswith("encoder.") for k in m.trainable_state_dict())


class TestPoseEncoding:
    def test_hand_value(self):
        # Camera at (1, 2, 3) looking along world +z, fx = fy = 50 on a 100 x 100 image: fov 90 degrees.
        T = torch.eye(4, dtype=torch.float64)
        T[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
        K = torch.tensor([[50.0, 0, 49.5], [0, 50.0, 49.5], [0, 0, 1]], dtype=torch.float64)
        enc = encode_pose(T, K, (100, 100))
        expected = torch.tensor([-1.0, -2.0, -3.0, 0, 0, 0, 1, math.pi / 2, math.pi / 2], dtype=torch.float64)
        torch.testing.assert_close(enc, expected)

    def test_round_trip(self):
        import roma

        R = roma.random_rotmat(5, dtype=torch.float64)
        T = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
        T[:, :3, :3], T[:, :3, 3] = R, torch.randn(5, 3, dtype=torch.float64)
        K = torch.zeros(5, 3, 3, dtype=torch.float64)
        K[:, 0, 0], K[:, 1, 1] = (
            torch.rand(5, dtype=torch.float64) * 50 + 40,
            torch.rand(5, dtype=torch.float64) * 50 + 40,
        )
        K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = 31.5, 23.5, 1
        enc = encode_pose(T, K, (48, 64))
        assert (enc[:, 6] >= 0).all()
        T2, K2 = decode_pose(enc, (48, 64))
        torch.testing.assert_close(T2, T)
        torch.testing.assert_close(K2, K)

    def test_bad_shape(self):
        with pytest.raises(ValueError, match=r"T_world_cam must be \[..., 4, 4\]"):
            encode_pose(torch.eye(3), torch.eye(3), (4, 4))
