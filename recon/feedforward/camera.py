"""VGGT's camera parametrisation ("absT_quaR_FoV"): 9 numbers per frame, and its inverse.

``pose_enc [..., 9] = [t (3), q (4), fov_h, fov_w]`` where, for the camera-from-world transform
``T_cam_world = [R | t]`` of an OpenCV camera (x right, y down, z forward):

- ``t``: the translation of ``T_cam_world`` (not the camera centre);
- ``q``: the unit quaternion of ``R``, scalar LAST (x, y, z, w), as VGGT and roma write it;
- ``fov_h = 2 atan(H / (2 fy))``, ``fov_w = 2 atan(W / (2 fx))`` in radians; the principal point is assumed at the
  image centre ``((W - 1) / 2, (H - 1) / 2)`` in recon's pixel convention (centre of the top-left pixel at 0).

Sequences are expressed in the frame of their first camera, so frame 0 encodes ``[0, 0, 0, 0, 0, 0, 1, ...]``.
"""

from __future__ import annotations

import roma
import torch
from torch import Tensor

POSE_DIM = 9


def _check(name: str, x: Tensor, tail: tuple[int, ...]) -> None:
    if x.shape[-len(tail) :] != tail:
        raise ValueError(f"{name} must be [..., {', '.join(map(str, tail))}], got {tuple(x.shape)}")


def encode_pose(T_world_cam: Tensor, K: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """``T_world_cam [..., 4, 4]`` and ``K [..., 3, 3]`` (pixels) -> ``pose_enc [..., 9]``."""
    _check("T_world_cam", T_world_cam, (4, 4))
    _check("K", K, (3, 3))
    H, W = image_hw
    T_cam_world = torch.linalg.inv(T_world_cam)
    t = T_cam_world[..., :3, 3]
    q = roma.rotmat_to_unitquat(T_cam_world[..., :3, :3])  # x y z w
    q = torch.where(q[..., 3:] < 0, -q, q)  # one of the two signs, w >= 0, so that targets are unique
    fov_h = 2 * torch.atan(0.5 * H / K[..., 1, 1])
    fov_w = 2 * torch.atan(0.5 * W / K[..., 0, 0])
    return torch.cat((t, q, fov_h[..., None], fov_w[..., None]), dim=-1)


def decode_pose(pose_enc: Tensor, image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``pose_enc [..., 9]`` -> ``(T_world_cam [..., 4, 4], K [..., 3, 3])``; the quaternion is normalised first."""
    _check("pose_enc", pose_enc, (POSE_DIM,))
    H, W = image_hw
    t, q, fov = pose_enc[..., :3], pose_enc[..., 3:7], pose_enc[..., 7:9]
    R = roma.unitquat_to_rotmat(torch.nn.functional.normalize(q, dim=-1))
    T_cam_world = torch.zeros(*pose_enc.shape[:-1], 4, 4, dtype=pose_enc.dtype, device=pose_enc.device)
    T_cam_world[..., :3, :3] = R
    T_cam_world[..., :3, 3] = t
    T_cam_world[..., 3, 3] = 1
    fy = 0.5 * H / torch.tan(0.5 * fov[..., 0])
    fx = 0.5 * W / torch.tan(0.5 * fov[..., 1])
    K = torch.zeros(*pose_enc.shape[:-1], 3, 3, dtype=pose_enc.dtype, device=pose_enc.device)
    K[..., 0, 0], K[..., 1, 1] = fx, fy
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = (W - 1) / 2, (H - 1) / 2, 1
    return torch.linalg.inv(T_cam_world), K
