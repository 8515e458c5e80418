"""Multi-view depth on the Robust MVD benchmark sets (KITTI, DTU, ETH3D, Tanks and Temples, ScanNet).

Protocol (DUNE supplement D.1 / Table 3, after Schröder et al., "Robust Multi-view Depth", rmvd):

1. A sample is a key view and its source views. For every source view ``s`` the model predicts the pair
   ``(key, s)``; the key view's depth from that pair is the z of its point map ``pts3d_i`` (camera-key frame),
   with the pair's confidence ``conf_i``.
2. Several pairs predict the same key depth at different unknown scales: each map is rescaled onto the first
   one (median of per-pixel ratios) and the maps are averaged with their confidences as weights
   (``fuse_depths``).
3. The fused depth (network resolution) is sampled at every ground-truth pixel by nearest neighbour, as rmvd
   resizes predictions to the ground truth with order 0; pixels outside the network crop are not scored.
4. Alignment ``median`` (rmvd's ``alignment="median"``: scale by ``median(gt) / median(pred)`` over valid
   pixels), ``translation`` (rmvd's: scale by true / predicted distance between the key and first source
   cameras; the predicted one from the similarity between the pairs ``(key, s)`` and ``(s, key)``) or ``none``
   (metric models); then the prediction is clipped to rmvd's ``[0.1, 100]``.
5. Metrics per sample (``depth_metrics``): absolute relative error ``rel = mean(|pred - gt| / gt)`` and the
   inlier ratio ``tau = mean(max(pred/gt, gt/pred) < 1.03)``, both in percent over pixels with ``gt > 0``;
   per set the mean over samples, and the unweighted average over sets (Table 3's "avg." column).

Data layout. rmvd ships its sample lists as Python pickles of its own classes, which recon will not unpickle
(see ``docs/evaluation.md`` for a converter to run inside rmvd's environment). Each set is read from
``ROOT/samples.json`` (``--samples`` to name another file)::

    {"dataset": "eth3d",
     "samples": [{"name": "courtyard/0003",
                  "keyview": 0,
                  "views": [{"image": "courtyard/images/dslr_images/DSC_0286.JPG",
                             "depth": "courtyard/ground_truth_depth/dslr_images/DSC_0286.JPG",  # key only
                             "K": [[...], [...], [...]], "T_world_cam": [[...] x4]}, ...]}]}

paths relative to ROOT. Ground-truth depth is read in each set's own encoding, as rmvd reads it
(``NATIVE_DIVISOR``): KITTI 16-bit PNG / 256, ScanNet 16-bit PNG millimetres (640x480, smaller than its colour
images: scored on the depth's grid, as rmvd resizes the images to it), ETH3D headerless float32 of the image's
size (6048x4032), DTU PFM millimetres, Tanks and Temples ``.npz`` (array ``arr_0``, metres); ``.npy`` is
accepted everywhere (metres). 0 or non-finite = invalid.

Results go to ``OUT/<dataset>/results.jsonl``, one line per sample, resumable (as ``recon eval co3d``), and
``OUT/summary.{json,md}`` holds the table over every set evaluated into ``OUT``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backbone.fileio import write_json_atomic, write_text_atomic
from recon.datasets.data import DatasetError
from tools.eval.runner import _repair_torn_tail, check_run_info, shard_items

logger = logging.getLogger(__name__)

DATASETS = ("kitti", "dtu", "eth3d", "tanks", "scannet")
"""Table 3's sets, in its column order."""

NATIVE_DIVISOR = {"kitti": 256.0, "scannet": 1000.0, "dtu": 1000.0}
"""Divisor of each set's own ground-truth files (KITTI 16-bit PNG / 256, ScanNet PNG millimetres, DTU PFM
millimetres, as rmvd reads them); ``.npy`` / ``.npz`` / raw float32 are metres."""

CLIP_RANGE = (0.1, 100.0)
"""rmvd clips predictions to this range before scoring (``clip_pred_depth=True``)."""

INLIER_THRESHOLD = 1.03
ALIGNMENTS = ("median", "none")
"""Alignments ``align_depth`` applies alone; ``translation`` (rmvd's third) needs poses: ``evaluate_sample``."""
MAX_VIEWS = 64
"""Largest sample accepted (key + sources): bounds the decoder work one JSON line can ask for."""


@dataclass(frozen=True)
class MvdView:
    """One view of a sample: image path, optional depth path, ``K [3, 3]`` and ``T_world_cam [4, 4]``."""

    image_path: str
    depth_path: str | None
    K: np.ndarray
    T_world_cam: np.ndarray


@dataclass(frozen=True)
class MvdSample:
    """A key view (``views[keyview]``, which has a ground-truth depth) and its source views."""

    name: str
    keyview: int
    views: list[MvdView]

    @property
    def sources(self) -> list[int]:
        return [k for k in range(len(self.views)) if k != self.keyview]


def _read_pfm(path: Path) -> np.ndarray:
    """A single-channel PFM (``Pf``) as ``[H, W]`` float32, top row first."""
    with open(path, "rb") as f:
        if f.readline().strip() != b"Pf":
            raise DatasetError(f"{path}: not a single-channel PFM (header 'Pf')")
        try:
            W, H = (int(v) for v in f.readline().split())
            scale = float(f.readline().strip())
        except ValueError:
            raise DatasetError(f"{path}: malformed PFM header") from None
        data = np.fromfile(f, dtype="<f4" if scale < 0 else ">f4")
    if data.size != H * W:
        raise DatasetError(f"{path}: PFM holds {data.size} values, header says {H}x{W}")
    return np.flipud(data.reshape(H, W)).astype(np.float32)  # PFM rows run bottom to top


def read_depth(
    path: str | os.PathLike, *, divisor: float = 1.0, raw_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """A ground-truth depth file: ``.npy``, ``.npz`` (array ``arr_0``), ``.pfm``, 16-bit ``.png``, or headerless
    float32 (any other suffix; needs ``raw_shape``).

    Args:
        path: the depth file.
        divisor: the stored values are divided by this (e.g. 256 for KITTI PNG, 1000 for millimetres).
        raw_shape: ``(H, W)`` of a headerless float32 file (ETH3D: the image's size).

    Returns:
        ``[H, W]`` float32 z-depth, 0 where invalid (non-finite or <= 0).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DatasetError(f"ground-truth depth {path} does not exist")
    if suffix == ".npy":
        depth = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "arr_0" not in z.files:
                raise DatasetError(f"{path}: expected an array 'arr_0', found {z.files}")
            depth = z["arr_0"]
    elif suffix == ".pfm":
        depth = _read_pfm(path)
    elif suffix == ".png":
        from PIL import Image

        with Image.open(path) as im:
            raw = np.asarray(im)
        if raw.dtype not in (np.uint16, np.int32) or raw.ndim != 2:
            raise DatasetError(f"{path}: expected a 16-bit single-channel PNG, got {raw.dtype} {raw.shape}")
        depth = raw
    elif raw_shape is not None:
        H, W = raw_shape
        raw = np.fromfile(path, dtype=np.float32)
        if raw.size != H * W:
            raise DatasetError(f"{path}: {raw.size} float32 values, expected {H}x{W} (the image's size)")
        depth = raw.reshape(H, W)
    else:
        raise DatasetError(f"{path}: unknown depth format {suffix!r} (use .npy, .npz, .pfm or .png)")
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise DatasetError(f"{path}: depth must be a 2-D map, got shape {depth.shape}")
    depth = depth / divisor
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)


def orig_to_grid(shape_orig: tuple[int, int], shape_grid: tuple[int, int]) -> np.ndarray:
    """``[3, 3]`` map from image pixels to the pixels of a resized copy (pixel centres on integers).

    ScanNet's depth (640x480) is smaller than its colour images; rmvd resizes the images to the depth's size.
    """
    (H0, W0), (H, W) = shape_orig, shape_grid
    sx, sy = W / W0, H / H0
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def read_list(path: Path, key: str, dataset: str, doc_section: str) -> dict:
    """A JSON sample / pair list: an object with a ``key`` list and an optional ``dataset`` that must match."""
    if not path.is_file():
        raise DatasetError(f"{key[:-1]} list {path} does not exist (see docs/evaluation.md, '{doc_section}')")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DatasetError(f"{path}: expected an object with a '{key}' list")
    if data.get("dataset", dataset) != dataset:
        raise DatasetError(f"{path} lists {data['dataset']!r} {key}, not {dataset!r}")
    return data


def _matrix(value, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        m = None
    if m is None or m.shape != shape or not np.all(np.isfinite(m)):
        raise DatasetError(f"{where}: expected a finite {shape[0]}x{shape[1]} matrix")
    return m


class MvdReader:
    """Samples of one Robust MVD set from ``ROOT/samples.json`` (see the module docstring for the layout).

    Args:
        root: the set's root folder.
        dataset: one of ``DATASETS``.
        samples_file: the sample list (default ``ROOT/samples.json``).
    """

    def __init__(self, root: str | os.PathLike, dataset: str, samples_file: str | os.PathLike | None = None):
        if dataset not in DATASETS:
            raise DatasetError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
        self.root = Path(root)
        self.dataset = dataset
        path = Path(samples_file) if samples_file else self.root / "samples.json"
        data = read_list(path, "samples", dataset, "Multi-view depth")
        self.samples = [self._sample(s, f"{path}: sample {n}") for n, s in enumerate(data["samples"])]
        names = [s.name for s in self.samples]
        if len(set(names)) != len(names):
            raise DatasetError(f"{path}: sample names are not unique")

    def _sample(self, rec, where: str) -> MvdSample:
        if not isinstance(rec, dict) or not isinstance(rec.get("views"), list) or "name" not in rec:
            raise DatasetError(f"{where}: needs 'name' and a 'views' list")
        views_in = rec["views"]
        if not 2 <= len(views_in) <= MAX_VIEWS:
            raise DatasetError(f"{where}: needs 2 to {MAX_VIEWS} views, has {len(views_in)}")
        key = rec.get("keyview", 0)
        if not isinstance(key, int) or not 0 <= key < len(views_in):
            raise DatasetError(f"{where}: keyview {key!r} is not a view index")
        views = []
        for k, v in enumerate(views_in):
            if not isinstance(v, dict) or not isinstance(v.get("image"), str):
                raise DatasetError(f"{where}, view {k}: needs an 'image' path")
            depth = v.get("depth")
            views.append(
                MvdView(
                    image_path=str(self.root / v["image"]),
                    depth_path=None if depth is None else str(self.root / depth),
                    K=_matrix(v.get("K"), (3, 3), f"{where}, view {k}, K"),
                    T_world_cam=_matrix(v.get("T_world_cam"), (4, 4), f"{where}, view {k}, T_world_cam"),
                )
            )
        if views[key].depth_path is None:
            raise DatasetError(f"{where}: the key view has no 'depth'")
        return MvdSample(str(rec["name"]), key, views)

    def __len__(self) -> int:
        return len(self.samples)

    def gt_depth(self, sample: MvdSample) -> np.ndarray:
        """``[Hd, Wd]`` ground-truth depth of the key view (the image's size, or smaller for ScanNet)."""
        from PIL import Image

        view = sample.views[sample.keyview]
        with Image.open(view.image_path) as im:
            W, H = im.size
        native = Path(view.depth_path).suffix.lower() in (".png", ".pfm")
        divisor = NATIVE_DIVISOR.get(self.dataset, 1.0) if native else 1.0
        return read_depth(view.depth_path, divisor=divisor, raw_shape=(H, W) if self.dataset == "eth3d" else None)


# --- fusion, alignment and metrics -----------------------------------------------------------------------------


def fuse_depths(depths: np.ndarray, confs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence-weighted average of several depth maps of one view predicted at different scales.

    Each map ``p`` is first rescaled onto map 0 by ``median(d_0 / d_p)`` over pixels where both are positive
    (pair predictions are up to scale), then ``d = sum_p c_p d_p / sum_p c_p``.

    Args:
        depths: ``[P, H, W]`` depth maps (z of the key view's point map, one per pair).
        confs: ``[P, H, W]`` their confidences (> 0).

    Returns:
        ``(depth [H, W], conf [H, W])``: fused depth (0 where no map is positive) and the mean confidence.
    """
    depths = np.asarray(depths, dtype=np.float64)
    confs = np.asarray(confs, dtype=np.float64)
    if depths.ndim != 3 or depths.shape != confs.shape:
        raise ValueError(f"depths {depths.shape} and confs {confs.shape} must both be [P, H, W]")
    ok = np.isfinite(depths) & (depths > 0)
    scaled = np.zeros_like(depths)
    for p in range(depths.shape[0]):
        both = ok[0] & ok[p]
        s = float(np.median(depths[0][both] / depths[p][both])) if both.any() else 1.0
        scaled[p] = np.where(ok[p], depths[p] * s, 0.0)
    w = np.where(ok, np.clip(confs, 0.0, None), 0.0)
    wsum = w.sum(0)
    fused = np.divide((w * scaled).sum(0), wsum, out=np.zeros(wsum.shape), where=wsum > 0)
    return fused, confs.mean(0)


def align_depth(pred: np.ndarray, gt: np.ndarray, mode: str = "median") -> tuple[np.ndarray, float]:
    """Scale ``pred`` onto ``gt`` (``median``: ``median(gt) / median(pred)`` over pixels valid in both) and clip.

    Returns:
        ``(pred [H, W] clipped to CLIP_RANGE, scale)``; the scale is NaN when no pixel is valid in both (then
        the prediction is left unscaled, as rmvd does).
    """
    if mode not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {mode!r}; expected one of {ALIGNMENTS}")
    scale = 1.0
    if mode == "median":
        mask = (gt > 0) & np.isfinite(pred) & (pred > 0)
        scale = float(np.median(gt[mask]) / np.median(pred[mask])) if mask.any() else float("nan")
        if np.isfinite(scale):
            pred = pred * scale
    pred = np.clip(np.nan_to_num(pred, nan=0.0, posinf=0.0, neginf=0.0), *CLIP_RANGE)
    return pred, scale


def depth_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """``rel`` (mean absolute relative error) and ``tau`` (inlier ratio at 1.03), both in percent.

    Pixels with ``gt <= 0`` (and outside ``mask``) are ignored; a ``pred <= 0`` is an outlier for ``tau``.
    Both are NaN when no pixel is scored.
    """
    valid = gt > 0
    if mask is not None:
        valid &= mask
    if not valid.any():
        return {"rel": float("nan"), "tau": float("nan"), "pixels": 0}
    g, p = gt[valid].astype(np.float64), pred[valid].astype(np.float64)
    rel = np.abs(p - g) / g
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(g / p, p / g)
    inlier = (p > 0) & (ratio < INLIER_THRESHOLD)
    return {"rel": 100.0 * float(rel.mean()), "tau": 100.0 * float(inlier.mean()), "pixels": int(valid.sum())}


def to_original_pixels(depth_net: np.ndarray, net_to_orig: np.ndarray, shape: tuple[int, int]):
    """Nearest-neighbour resample of a network-resolution map to the original image's pixels.

    Args:
        depth_net: ``[h, w]`` map on the network image.
        net_to_orig: ``[3, 3]`` network pixel -> original pixel (``View.net_to_orig``).
        shape: ``(H0, W0)`` original size.

    Returns:
        ``(depth [H0, W0], inside [H0, W0] bool)``: ``inside`` is False where the original pixel fell outside
        the network crop (those pixels are not scored).
    """
    H0, W0 = shape
    h, w = depth_net.shape
    A = np.linalg.inv(np.asarray(net_to_orig, dtype=np.float64))
    if abs(A[0, 1]) > 1e-12 or abs(A[1, 0]) > 1e-12:
        raise ValueError("net_to_orig must be axis-aligned (scale and crop), as recon.images makes it")
    # Separable: one index per column and per row, so a 6048x4032 ETH3D map costs two small arrays.
    xn = np.rint(A[0, 0] * np.arange(W0) + A[0, 2]).astype(np.int64)
    yn = np.rint(A[1, 1] * np.arange(H0) + A[1, 2]).astype(np.int64)
    cols, rows = (xn >= 0) & (xn < w), (yn >= 0) & (yn < h)
    inside = rows[:, None] & cols[None, :]
    out = np.zeros(shape, dtype=np.float32)
    out[np.ix_(rows, cols)] = depth_net[np.ix_(yn[rows], xn[cols])]
    return out, inside


# --- prediction ---------------------------------------------------------------------------------------------------


def predict_key_depth(
    model, sample: MvdSample, image_size: int | None = None, batch_size: int = 8, with_translation: bool = False
):
    """Fused network-resolution depth of the key view from the pairs ``(key, s)`` for every source ``s``.

    Args:
        model: anything with recon's ``encode`` / ``decode`` / ``patch_size`` / ``image_size`` (a ``ReconModel``
            or ``tools.oracle.OracleModel``).
        sample: the sample.
        image_size: network long side (default the model's own).
        with_translation: also return the predicted distance from the key camera to the first source camera at
            the fused depth's scale (for rmvd's ``translation`` alignment; one more pair is decoded).

    Returns:
        ``(depth [h, w], conf [h, w], key View, distance or None)``.
    """
    import torch

    from recon.images import load_images
    from recon.inference import encode_views

    size = image_size or int(model.image_size)
    p = int(model.patch_size)
    views, skipped = load_images(
        [v.image_path for v in sample.views], size=size, patch_size=p, square_ok=p != 16, skip_duplicates=False
    )
    if skipped or len(views) != len(sample.views):
        raise DatasetError(f"sample {sample.name}: cannot load " + "; ".join(f"{s[0]}: {s[1]}" for s in skipped))
    key = sample.keyview
    device = next(model.parameters()).device
    feats = encode_views(model, views, batch_size=batch_size, progress=False)  # each view encoded once
    # Only (key, source) is decoded: the key's depth comes from view 1's point map (run_inference would also
    # decode every (source, key), twice the decoder work for nothing here).
    depths, confs = [], []
    sources = sample.sources
    for start in range(0, len(sources), batch_size):
        chunk = sources[start : start + batch_size]
        for shape2 in dict.fromkeys(views[s].true_shape for s in chunk):
            same = [s for s in chunk if views[s].true_shape == shape2]
            f1 = feats[key][None].expand(len(same), *feats[key].shape)
            f2 = torch.stack([feats[s] for s in same])
            # bf16 autocast on CUDA as recon.inference runs the network (the heads switch it off themselves)
            with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
                pred1, _ = model.decode(f1, f2, views[key].true_shape, shape2)
            depths += list(pred1["pts3d"][..., 2].float().cpu().numpy())
            confs += list(pred1["conf"].float().cpu().numpy())
    depth, conf = fuse_depths(np.stack(depths), np.stack(confs))
    distance = None
    if with_translation:
        distance = _source_distance(model, feats, views, key, sources[0], device)
    return depth, conf, views[key], distance


def _source_distance(model, feats, views, key: int, src: int, device) -> float:
    """Distance between the key and source cameras at the scale of pair ``(key, src)``.

    Pair ``(key, src)`` gives the source's points in the key frame, pair ``(src, key)`` the same pixels in the
    source's own frame (at another scale); the similarity between them (Umeyama, confidence-weighted) maps the
    source camera centre (its origin) to ``t``, so ``|t|`` is the baseline at the first pair's scale, which is
    the scale ``fuse_depths`` puts the fused map in.
    """
    import roma
    import torch

    shapes = views[key].true_shape, views[src].true_shape
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
        _, in_key = model.decode(feats[key][None], feats[src][None], *shapes)
        in_src, _ = model.decode(feats[src][None], feats[key][None], shapes[1], shapes[0])
    y = in_key["pts3d"][0].reshape(-1, 3).double().cpu()
    x = in_src["pts3d"][0].reshape(-1, 3).double().cpu()
    w = (in_key["conf"][0].reshape(-1) * in_src["conf"][0].reshape(-1)).double().cpu()
    _, t, _ = roma.rigid_points_registration(x, y, weights=w, compute_scaling=True)
    return float(torch.linalg.norm(t))


def evaluate_sample(model, reader: MvdReader, sample: MvdSample, alignment: str = "median", image_size=None) -> dict:
    """Predict, fuse, resample to the ground truth, align and score one sample (a results line)."""
    t0 = time.perf_counter()
    by_baseline = alignment == "translation"
    depth_net, _, view, distance = predict_key_depth(model, sample, image_size, with_translation=by_baseline)
    seconds = time.perf_counter() - t0
    gt = reader.gt_depth(sample)
    net_to_gt = orig_to_grid(view.orig_size, gt.shape) @ np.asarray(view.net_to_orig, dtype=np.float64)
    depth, inside = to_original_pixels(depth_net, net_to_gt, gt.shape)
    gt_scored = np.where(inside, gt, 0.0)
    if by_baseline:
        # rmvd's "translation": scale by the ratio of true to predicted baseline (key to first source camera)
        T = [sample.views[k].T_world_cam for k in (sample.keyview, sample.sources[0])]
        baseline = float(np.linalg.norm(T[0][:3, 3] - T[1][:3, 3]))
        scale = baseline / distance if distance else float("nan")  # no baseline: NaN depth, clipped, scored bad
        pred, _ = align_depth(depth * scale, gt_scored, "none")
    else:
        pred, scale = align_depth(depth, gt_scored, alignment)
    metrics = depth_metrics(pred, gt_scored)
    return {
        "sample": sample.name,
        "views": len(sample.views),
        **metrics,
        "scale": scale,
        "seconds": seconds,
    }


# --- run, resume, summary -------------------------------------------------------------------------------------


def _load_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    recs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith("\n"):
                continue  # torn tail of a killed run: recomputed
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path}:{n} is not valid JSON ({err}); remove the line to continue") from err
    return recs


def run_mvdepth(
    model,
    reader: MvdReader,
    out_dir: str | os.PathLike,
    *,
    alignment: str = "median",
    image_size: int | None = None,
    label: str = "",
    shard: tuple[int, int] = (0, 1),
    max_samples: int | None = None,
    fail_fast: bool = False,
) -> tuple[int, int]:
    """Evaluate the reader's samples into ``OUT/<dataset>/results*.jsonl``, skipping samples already there.

    Args:
        model: see ``predict_key_depth``.
        reader: the set.
        out_dir: output folder shared by every set of a model (``OUT/run.json`` pins model and settings).
        alignment: ``median`` or ``none``.
        image_size: network long side.
        label: names the model in ``run.json`` (resuming with another label is refused).
        shard: ``(i, n)``: evaluate samples ``i, i+n, ...``.
        max_samples: evaluate only the first samples of the list (quick looks).
        fail_fast: stop at the first sample that fails; by default it is recorded (``"failed": true``, no score,
            counted in the summary's ``failed``) and the run goes on.

    Returns:
        ``(done, skipped)`` sample counts.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_run_info(out_dir, {"protocol": "mvdepth", "model": label, "alignment": alignment, "image_size": image_size})
    folder = out_dir / reader.dataset
    folder.mkdir(exist_ok=True)
    i, n = shard
    path = folder / ("results.jsonl" if n == 1 else f"results.shard-{i}-of-{n}.jsonl")
    _repair_torn_tail(path)
    done = {r["sample"] for p in sorted(folder.glob("results*.jsonl")) for r in _load_records(p)}
    samples = reader.samples[:max_samples] if max_samples else reader.samples
    mine = shard_items(samples, shard)
    todo = [s for s in mine if s.name not in done]
    with open(path, "a", encoding="utf-8") as f:
        for s in todo:
            try:
                rec = evaluate_sample(model, reader, s, alignment, image_size)
            except (ImportError, MemoryError):
                raise  # the environment, not this sample: every other sample would fail the same way
            except Exception as err:
                if fail_fast:
                    raise
                # Finished samples are safe on disk; record this one as failed (not scored) and go on.
                logger.error("%s/%s failed: %s", reader.dataset, s.name, err)
                rec = {"sample": s.name, "views": len(s.views), "rel": float("nan"), "tau": float("nan"), "pixels": 0,
                       "seconds": 0.0, "failed": True, "error": f"{type(err).__name__}: {err}"}  # fmt: skip
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
            logger.info("%s/%s: rel %.2f tau %.1f (%.2fs)", reader.dataset, s.name, rec["rel"], rec["tau"],
                        rec["seconds"])  # fmt: skip
    return len(todo), len(mine) - len(todo)


def summarize_mvdepth(out_dir: str | os.PathLike) -> dict:
    """Table 3 of every set evaluated into ``out_dir``; writes ``summary.{json,md}`` atomically.

    Returns:
        ``{"sets": {dataset: {"rel", "tau", "samples"}}, "average": {"rel", "tau"}}``: per set the mean over
        samples with a score, then the unweighted mean over sets.
    """
    out_dir = Path(out_dir)
    sets = {}
    for name in DATASETS:
        every = [r for p in sorted((out_dir / name).glob("results*.jsonl")) for r in _load_records(p)]
        recs = [r for r in every if np.isfinite(r["rel"])]
        if recs:
            sets[name] = {
                "rel": float(np.mean([r["rel"] for r in recs])),
                "tau": float(np.mean([r["tau"] for r in recs])),
                "samples": len(recs),
                "failed": len(every) - len(recs),
            }
    if not sets:
        raise DatasetError(f"no multi-view depth results in {out_dir}")
    average = {k: float(np.mean([s[k] for s in sets.values()])) for k in ("rel", "tau")}
    summary = {"sets": sets, "average": average}
    write_json_atomic(out_dir / "summary.json", summary)
    write_text_atomic(out_dir / "summary.md", format_mvdepth(summary))
    return summary


def format_mvdepth(summary: dict) -> str:
    """Markdown in Table 3's shape: one column pair (rel down, tau up) per set, then the average."""
    names = list(summary["sets"])
    head = "| | " + " | ".join(f"{n} rel ↓ | {n} τ ↑" for n in names) + " | avg rel ↓ | avg τ ↑ |"
    sep = "|---" * (2 * len(names) + 3) + "|"
    cells = [f"{summary['sets'][n]['rel']:.2f} | {summary['sets'][n]['tau']:.1f}" for n in names]
    row = "| model | " + " | ".join(cells) + f" | {summary['average']['rel']:.2f} | {summary['average']['tau']:.1f} |"
    counts = ", ".join(f"{n}: {summary['sets'][n]['samples']}" for n in names)
    failed = sum(s.get("failed", 0) for s in summary["sets"].values())
    note = f"\n\n**{failed} samples failed or had no scored pixel** and are left out of the means." if failed else ""
    return "\n".join([head, sep, row]) + f"\n\nrel and τ@1.03 in percent; samples per set: {counts}.{note}\n"
