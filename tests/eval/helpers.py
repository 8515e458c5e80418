"""Helpers shared by the end-to-end tests."""

import numpy as np
from scipy.spatial.transform import Rotation

from tools.eval.predictors import OraclePredictor


def independent_metrics(recs):
    """Recompute the summary from recorded poses with a per-pair loop (scipy rotations), PD convention."""
    per_cat = {}
    for r in recs.values():
        gt, pr = np.array(r["T_world_cam_gt"]), np.array(r["T_world_cam_pred"])
        rot, tra = [], []
        for i in range(len(gt)):
            for j in range(i + 1, len(gt)):
                rel_g = np.linalg.inv(gt[j]) @ gt[i]
                rel_p = np.linalg.inv(pr[j]) @ pr[i]
                rot.append(np.degrees(Rotation.from_matrix(rel_g[:3, :3].T @ rel_p[:3, :3]).magnitude()))
                a, b = rel_g[:3, 3], rel_p[:3, 3]
                c = abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b)
                tra.append(np.degrees(np.arccos(min(c, 1.0))))
        per_cat.setdefault(r["category"], []).append((np.array(rot), np.array(tra)))
    out = {}
    for cat, seqs in per_cat.items():
        rot = np.concatenate([s[0] for s in seqs])
        tra = np.concatenate([s[1] for s in seqs])
        m = np.maximum(rot, tra)
        out[cat] = {
            "RRA@15": 100 * np.mean(rot < 15),
            "RTA@15": 100 * np.mean(tra < 15),
            "mAA(30)": 100 * np.mean([np.mean(m < k) for k in range(1, 30)] + [np.mean(m <= 30)]),
        }
    return out, {k: np.mean([v[k] for v in out.values()]) for k in ("RRA@15", "RTA@15", "mAA(30)")}


class Interrupting:
    """An oracle that dies (like a killed process) after a number of sequences, and counts its calls."""

    def __init__(self, stop_after=None):
        self.inner = OraclePredictor()
        self.name = "oracle"
        self.calls = []
        self.stop_after = stop_after

    def describe(self):
        return self.inner.describe()

    def predict(self, frames):
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(frames[0].rel_path.split("/")[1])
        return self.inner.predict(frames)


def tiny_model(name: str):
    """A tiny random ``ReconModel`` of preset ``name`` (CroCo or DUNE backbone), in eval mode."""
    import torch

    from recon.model import DecoderConfig, HeadConfig, build_model

    torch.manual_seed(0)
    over = {"embed_dim": 32, "depth": 1, "num_heads": 2}
    if name.startswith("dune"):
        over["pos_embed_grid"] = 4
    return build_model(
        name, backbone_overrides=over, decoder=DecoderConfig(embed_dim=32, depth=10, num_heads=2),
        head=HeadConfig(kind="catmlp+dpt", dpt_feature_dim=16, dpt_layer_dims=(8, 16, 24, 32)),
    ).eval()  # fmt: skip
