"""Writers of tiny CO3Dv2 and RealEstate10K layouts, exactly as the reference's section 7 describes.

Kept independent of tools.eval (own conversion code) so the readers are checked against a second
implementation of the reference's formulas.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 48, 64  # image.size = [48, 64]


@dataclass
class SeqSpec:
    name: str
    split: str = "test"  # "test" or "train"
    quality: float = 1.0
    n_frames: int = 50
    bad_T_frame: int | None = None  # this frame gets T = [1e5, 1, 0]
    empty_mask_frame: int | None = None  # this frame's mask is all zero
    yaw0_deg: float = 0.0
    yaw_step_deg: float = 7.2  # keep n * step < 360: coincident centres have no translation direction


def look_at_circle(n, radius=3.0, height=0.5, yaw_step_deg=7.2, yaw0_deg=0.0):
    """``[n, 4, 4]`` OpenCV camera-to-world poses on a circle (world z up), looking at the origin."""
    out = np.tile(np.eye(4), (n, 1, 1))
    for k in range(n):
        a = np.radians(yaw0_deg + k * yaw_step_deg)
        C = np.array([radius * np.cos(a), radius * np.sin(a), height])
        z = -C / np.linalg.norm(C)
        x = np.cross(z, [0.0, 0.0, 1.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        out[k, :3, :3] = np.stack([x, y, z], axis=1)
        out[k, :3, 3] = C
    return out


def opencv_to_p3d(T_world_cam):
    """Reference 2.6 step 5: R = R_w2c^T with columns 0, 1 negated; T = t_w2c with entries 0, 1 negated."""
    R_w2c = T_world_cam[:3, :3].T
    t_w2c = -R_w2c @ T_world_cam[:3, 3]
    R = R_w2c.T.copy()
    R[:, :2] *= -1
    T = t_w2c.copy()
    T[:2] *= -1
    return R, T


def _write_jgz(path: Path, obj) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(obj, f)


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path, quality=80)


def write_co3d_layout(root: Path, categories: dict[str, list[SeqSpec]], legacy_intrinsics: bool = False) -> dict:
    """Write a CO3Dv2-layout dataset. Returns ``{(cat, seq): [n, 4, 4] GT T_world_cam}`` (all frames)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "category_to_subset_name_list.json").write_text(json.dumps({c: ["fewview_dev"] for c in categories}))
    gt = {}
    for cat, specs in categories.items():
        cat_dir = root / cat
        (cat_dir / "set_lists").mkdir(parents=True, exist_ok=True)
        seq_anns, frame_anns = [], []
        set_list = {"train": [], "val": [], "test": []}
        for spec in specs:
            seq_anns.append(
                {"sequence_name": spec.name, "category": cat, "video": None, "point_cloud": None,
                 "viewpoint_quality_score": spec.quality}
            )  # fmt: skip
            poses = look_at_circle(spec.n_frames, yaw_step_deg=spec.yaw_step_deg, yaw0_deg=spec.yaw0_deg)
            gt[(cat, spec.name)] = poses
            for fn in range(spec.n_frames):
                idx = fn + 1  # file index != frame_number: loaders must join on frame_number
                img = f"{cat}/{spec.name}/images/frame{idx:06d}.jpg"
                depth = f"{cat}/{spec.name}/depths/frame{idx:06d}.jpg.geometric.png"
                dmask = f"{cat}/{spec.name}/depth_masks/frame{idx:06d}.png"
                mask = f"{cat}/{spec.name}/masks/frame{idx:06d}.png"
                R, T = opencv_to_p3d(poses[fn])
                if spec.bad_T_frame == fn:
                    T = np.array([1e5, 1.0, 0.0])
                if legacy_intrinsics:
                    focal, fmt = [2.0 * 48 / 64, 2.0 * 48 / 48], "ndc_norm_image_bounds"
                else:
                    focal, fmt = [2.0, 2.0], "ndc_isotropic"
                frame_anns.append(
                    {
                        "sequence_name": spec.name, "frame_number": fn, "frame_timestamp": fn / 30.0,
                        "image": {"path": img, "size": [H, W]},
                        "depth": {"path": depth, "scale_adjustment": 1.0, "mask_path": dmask},
                        "mask": {"path": mask, "mass": 0.0},
                        "viewpoint": {"R": R.tolist(), "T": T.tolist(), "focal_length": focal,
                                      "principal_point": [0.0, 0.0], "intrinsics_format": fmt},
                        "meta": {"frame_type": f"{'dev' if spec.split == 'test' else 'train'}_known"},
                    }
                )  # fmt: skip
                set_list[spec.split].append([spec.name, fn, img])
                _jpeg(root / img, seed=zlib.crc32(img.encode()))
                m = np.zeros((H, W), np.uint8)
                if spec.empty_mask_frame != fn:
                    m[10:38, 16:48] = 255
                (root / mask).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(m).save(root / mask)
                frame_anns[-1]["mask"]["mass"] = float(m.sum() / 255)
                d = np.full((H, W), 3.0, np.float16).view(np.uint16)
                (root / depth).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(d).save(root / depth)
                (root / dmask).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((H, W), 255, np.uint8)).save(root / dmask)
        _write_jgz(cat_dir / "sequence_annotations.jgz", seq_anns)
        _write_jgz(cat_dir / "frame_annotations.jgz", frame_anns)
        (cat_dir / "set_lists" / "set_lists_fewview_dev.json").write_text(json.dumps(set_list))
    return gt


def apple_spec() -> list[SeqSpec]:
    """The reference's section 7.1 category: only seqA survives."""
    return [
        SeqSpec("seqA", empty_mask_frame=17),
        SeqSpec("seqLowQ", quality=0.5),
        SeqSpec("seqShort", n_frames=49),
        SeqSpec("seqBadT", bad_T_frame=5),
        SeqSpec("seqTrain", split="train", n_frames=10),
    ]


def write_re10k_layout(root: Path, clips: dict[str, int], missing_frames: tuple[str, ...] = ()) -> dict:
    """Write ``<root>/test/<id>.txt`` camera files and ``<root>/frames/test/<id>/<ts>.png`` frames.

    Args:
        clips: clip id -> number of frames.
        missing_frames: clip ids whose frame folder is not written (videos no longer available).

    Returns:
        ``{clip: (timestamps [n], T_world_cam [n, 4, 4], K [3, 3])}``.
    """
    root = Path(root)
    (root / "test").mkdir(parents=True, exist_ok=True)
    out = {}
    fx, fy, cx, cy = 0.9, 1.2, 0.5, 0.5
    K = np.array([[fx * W, 0, cx * W], [0, fy * H, cy * H], [0, 0, 1.0]])
    for c, (clip, n) in enumerate(clips.items()):
        ts = 1_000_000 * (c + 1) + 33_366 * np.arange(n)
        poses = look_at_circle(n, radius=2.0, height=0.2, yaw_step_deg=2.0, yaw0_deg=40.0 * c)
        lines = [f"https://www.youtube.com/watch?v={clip}"]
        for k in range(n):
            R_w2c = poses[k, :3, :3].T
            t_w2c = -R_w2c @ poses[k, :3, 3]
            P = np.concatenate([R_w2c, t_w2c[:, None]], axis=1).ravel()
            values = [str(int(ts[k])), repr(fx), repr(fy), repr(cx), repr(cy), "0", "0"] + [repr(float(v)) for v in P]
            lines.append(" ".join(values))
            if clip not in missing_frames:
                p = root / "frames" / "test" / clip / f"{int(ts[k])}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((H, W, 3), 40 + k, np.uint8)).save(p)
        (root / "test" / f"{clip}.txt").write_text("\n".join(lines) + "\n")
        out[clip] = (ts, poses, K)
    return out
