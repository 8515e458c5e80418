"""``mast3r_sfm_align``: the official MASt3R-SfM sparse global alignment, end to end (reference/mast3r.md §7-§8).

Steps, each the official one: correspondences from the four maps of every pair (``correspondences``); one
canonical view per image, its Weiszfeld focal and the anchors (``canonical``); the kinematic tree (``tree``); the
two-stage optimisation (``optimise``); the dense output with ``clean_pointcloud`` (``dense``).

Pair order follows the official ``make_pairs(scene_graph='complete', symmetrize=True)``: each unordered pair is
first visited as ``(larger index, smaller index)``, then every pair again reversed; sums over predictions and
matches run in that order (each prediction of a view enters its canonical view twice, as in the official).

Deliberate differences, all outside what the official can run: a view with no usable pair (no prediction with a
partner, or no match at all) is left out, marked ``registered=False`` and named in ``scene.info["unregistered"]``
(the official crashes); a pair with no match at all is skipped (the official crashes on it); shared intrinsics are
one parameter updated once per step (the official lists the same tensor N times in its optimiser).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recon.align.dust3r import clean_pointcloud
from recon.align.mast3r_sfm.canonical import anchor_offsets, canonical_view, weiszfeld_focal
from recon.align.mast3r_sfm.config import Mast3rSfmConfig
from recon.align.mast3r_sfm.correspondences import PairMatches, extract_correspondences
from recon.align.mast3r_sfm.dense import densify
from recon.align.mast3r_sfm.optimise import Anchored, SparseModel, Terms, optimise
from recon.align.mast3r_sfm.tree import kinematic_tree
from recon.align.problem import AlignmentError
from recon.types import Matches, PairPrediction, Priors, Scene, View, scene_view_fields

logger = logging.getLogger(__name__)


def _check_inputs(views: Sequence[View], preds: Sequence[PairPrediction], subsample: int) -> dict:
    n = len(views)
    for k, v in enumerate(views):
        if v.idx != k:
            raise AlignmentError(f"views[{k}].idx is {v.idx}; views must be indexed 0..N-1 in order")
        H, W = v.true_shape
        if H % subsample or W % subsample:
            raise AlignmentError(
                f"view {k} ({v.name}) is {W}x{H}; method='mast3r-sfm' (as the official code) needs width and height "
                f"that are multiples of subsample={subsample}"
            )
    by_key = {}
    for p in preds:
        if not (0 <= p.i < n and 0 <= p.j < n) or p.i == p.j:
            raise AlignmentError(f"pair ({p.i}, {p.j}) has a bad view index for {n} views")
        if p.desc_i is None or p.desc_j is None or p.desc_conf_i is None or p.desc_conf_j is None:
            raise AlignmentError(f"pair ({p.i}, {p.j}) has no descriptors; method='mast3r-sfm' needs a MASt3R head")
        for k, pts in ((p.i, p.pts3d_i), (p.j, p.pts3d_j)):
            if tuple(pts.shape[:2]) != views[k].true_shape:
                raise AlignmentError(
                    f"pair ({p.i}, {p.j}): points of view {k} are {tuple(pts.shape[:2])}, "
                    f"the view is {views[k].true_shape}"
                )
        by_key[p.key] = p
    for i, j in by_key:
        if (j, i) not in by_key:
            raise AlignmentError(
                f"pair ({i}, {j}) has no reverse ({j}, {i}); method='mast3r-sfm' needs both decoder passes of every "
                "pair (a symmetrized pair list)"
            )
    return by_key


def _pair_blind_conf_views(preds: Sequence[PairPrediction]) -> list[int]:
    """Views whose descriptor confidences are the same map in every prediction they appear in (two or more).

    A MASt3R head predicts a view's descriptor confidence conditioned on its partner, so it drops where the partner
    does not see the surface; per-view maps (synthetic descriptors, oracles) cannot, and then the official matcher
    keeps confident matches on pixels the other view does not see (docs/alignment.md, "Pair-blind descriptor
    confidences").
    """
    seen: dict[int, list[torch.Tensor]] = {}
    for p in preds:
        seen.setdefault(p.i, []).append(p.desc_conf_i)
        seen.setdefault(p.j, []).append(p.desc_conf_j)
    return sorted(
        k
        for k, confs in seen.items()
        if len(confs) > 1 and all(c is confs[0] or torch.equal(c, confs[0]) for c in confs[1:])
    )


def _given_matches(matches: Sequence[Matches], by_key: dict) -> dict:
    """User ``Matches`` as ``{(a, b): (xy_a, xy_b, conf)}`` with ``a > b``."""
    out = {}
    for m in matches:
        if (m.i, m.j) not in by_key:
            raise AlignmentError(f"matches ({m.i}, {m.j}) have no pair prediction")
        a, b = max(m.i, m.j), min(m.i, m.j)
        xy_i, xy_j = torch.as_tensor(np.asarray(m.xy_i, np.int64)), torch.as_tensor(np.asarray(m.xy_j, np.int64))
        out[(a, b)] = (
            (xy_i, xy_j, torch.as_tensor(np.asarray(m.conf, np.float32)))
            if m.i == a
            else (xy_j, xy_i, torch.as_tensor(np.asarray(m.conf, np.float32)))
        )
    return out


def _init_intrinsics(priors, placed, canon_focals, imsizes, dtype):
    """Official ``init[view]['intrinsics']``: ``(base focals [N], normalised principal points [N, 2])``."""
    focals = canon_focals.clone()
    pps = torch.full((len(placed), 2), 0.5, dtype=dtype)
    for x, k in enumerate(placed):
        K = priors.K[k] if priors is not None and priors.K else None
        f = priors.focal[k] if priors is not None and priors.focal else None
        if K is not None:
            K = torch.as_tensor(np.asarray(K), dtype=dtype)
            focals[x] = K[:2, :2].diagonal().mean()
            pps[x] = K[:2, 2] / imsizes[x]
        elif f is not None:
            focals[x] = float(f)
    return focals, pps


def _default_K(H: int, W: int) -> np.ndarray:
    """The official focal prior ``max(H, W) / (2 tan 30°)`` at the image centre (for views left unplaced)."""
    f = max(H, W) / (2 * math.tan(math.radians(30)))
    return np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], np.float64)


@dataclass
class _ViewData:
    """Per placed view: canonical data and its matched pixels, each tied to an anchor (official
    ``prepare_canonical_data`` + ``condense_data``). Lists are indexed by placed view."""

    shapes: list[tuple[int, int]]
    canon_focals: torch.Tensor  # [N] Weiszfeld focal of each canonical view
    core_depth: list[torch.Tensor]  # [h*w] canonical z at the anchors
    canon2: list[torch.Tensor]  # [H, W] relative depth w.r.t. the anchors
    conf: list[torch.Tensor]  # [H, W] canonical confidence
    uv1: list[torch.Tensor]  # [M, 3] matched pixels (x, y, 1), partner after partner
    anchor_idx: list[torch.Tensor]  # [M] anchor of each matched pixel
    offsets: list[torch.Tensor]  # [M] relative depth w.r.t. that anchor
    slices: list[dict[int, tuple[int, int]]]  # partner -> (start, stop) in the view's matched pixels
    preds21: list[dict[int, tuple[torch.Tensor, torch.Tensor]]]  # partner y -> (x seen from y [h*w, 3], conf)

    @property
    def anchor_start(self) -> list[int]:
        return np.concatenate([[0], np.cumsum([len(d) for d in self.core_depth])])[:-1].tolist()


def _prepare_views(n: int, tmp_pairs, pred, match_of, s: int, dtype) -> _ViewData:
    """Canonical view, focal and anchors of each of the ``n`` placed views; ``pred(x, y)`` is the
    ``PairPrediction`` of placed views ``(x, y)``, ``match_of(x, y)`` x's matched pixels with y and their conf."""
    d = _ViewData([], None, [], [], [], [], [], [], [], [])
    focals = []
    for x in range(n):
        own = [(x, y) for p1, p2 in tmp_pairs for (x_, y) in ((p1, p2), (p2, p1)) if x_ == x]
        pts = torch.stack([pred(x, y).pts3d_i.to(dtype) for _, y in own])
        conf = torch.stack([pred(x, y).conf_i.to(dtype) for _, y in own])
        canon, canon2, cconf = canonical_view(pts, conf, s)
        d.shapes.append(tuple(canon2.shape))
        focals.append(weiszfeld_focal(canon))
        d.core_depth.append(canon[s // 2 :: s, s // 2 :: s, 2].reshape(-1))
        d.canon2.append(canon2)
        d.conf.append(cconf)
        partners = list(dict.fromkeys(y for _, y in own))  # first-occurrence order
        view_uv, view_idx, view_off, view_slices, start = [], [], [], {}, 0
        for y in partners:
            xy, _ = match_of(x, y)
            idx, off = anchor_offsets(canon2, xy, s)
            view_uv.append(torch.cat((xy.to(dtype), torch.ones(len(xy), 1, dtype=dtype)), 1))
            view_idx.append(idx)
            view_off.append(off)
            view_slices[y] = (start, start + len(xy))
            start += len(xy)
        d.uv1.append(torch.cat(view_uv))
        d.anchor_idx.append(torch.cat(view_idx))
        d.offsets.append(torch.cat(view_off))
        d.slices.append(view_slices)
        # x as predicted in y's frame, on the grid [::s, ::s] (official: not the anchor grid s//2::s)
        d.preds21.append(
            {
                y: (
                    pred(y, x).pts3d_j.to(dtype)[::s, ::s].reshape(-1, 3),
                    pred(y, x).conf_j.to(dtype)[::s, ::s].reshape(-1),
                )
                for y in partners
            }
        )
    d.canon_focals = torch.cat(focals)
    return d


def _loss_terms(d: _ViewData, tmp_pairs, match_of, is_ok) -> tuple[Anchored, Terms]:
    """The official loss slices flattened into index arrays over all views' anchored pixels, in the official
    order (every ordered pair of ``tmp_pairs``; 2D terms grouped by the view reprojected into)."""
    n = len(d.uv1)
    n_pts = [len(u) for u in d.uv1]
    pstart = np.concatenate([[0], np.cumsum(n_pts)])[:-1].tolist()
    anchored = Anchored(
        view=torch.repeat_interleave(torch.arange(n), torch.tensor(n_pts)),
        counts=n_pts,
        uv1=torch.cat(d.uv1),
        anchor=torch.cat([idx + a for idx, a in zip(d.anchor_idx, d.anchor_start, strict=True)]),
        offset=torch.cat(d.offsets),
    )

    def span(x: int, y: int) -> torch.Tensor:
        lo, hi = d.slices[x][y]
        return torch.arange(pstart[x] + lo, pstart[x] + hi)

    m1, m2, mconf, d_src, d_blocks, d_tgt, d_conf = [], [], [], [], [], [], []
    corres2d: list[list] = [[] for _ in range(n)]
    for x, y in tmp_pairs:
        conf = match_of(x, y)[1]
        corres2d[x].append((y, conf))
        corres2d[y].append((x, conf))
        if is_ok(x, y):
            m1.append(span(x, y))
            m2.append(span(y, x))
            mconf.append(conf)
        else:  # all of x's anchored pixels against x as predicted in y's frame, at their anchors
            pts21, conf21 = d.preds21[x][y]
            d_src.append(torch.arange(pstart[x], pstart[x] + n_pts[x]))
            d_blocks.append((y, n_pts[x]))
            d_tgt.append(pts21[d.anchor_idx[x]])
            d_conf.append(conf21[d.anchor_idx[x]])
    r_blocks, r_pix, r_src, r_conf = [], [], [], []
    for x in range(n):
        for y, conf in corres2d[x]:
            if is_ok(x, y):
                r_blocks.append((x, len(conf)))
                r_pix.append(d.uv1[x][slice(*d.slices[x][y]), :2])
                r_src.append(span(y, x))
                r_conf.append(conf)
    dtype = anchored.uv1.dtype

    def cat(parts, shape=(0,), dt=None):
        return torch.cat(parts) if parts else torch.zeros(shape, dtype=dt or dtype)

    terms = Terms(
        m1=cat(m1, dt=torch.int64), m2=cat(m2, dt=torch.int64), mconf=cat(mconf),
        r_blocks=r_blocks, r_pix=cat(r_pix, (0, 2)), r_src=cat(r_src, dt=torch.int64),
        r_conf=cat(r_conf), d_src=cat(d_src, dt=torch.int64), d_blocks=d_blocks,
        d_tgt=cat(d_tgt, (0, 3)), d_conf=cat(d_conf),
    )  # fmt: skip
    return anchored, terms


def mast3r_sfm_align(
    views: Sequence[View],
    preds: Sequence[PairPrediction],
    config: Mast3rSfmConfig | None = None,
    priors: Priors | None = None,
    *,
    matches: Sequence[Matches] | None = None,
) -> Scene:
    """Official MASt3R-SfM sparse global alignment of ``views`` from their pair predictions.

    Args:
        views: N views (``image [3, H, W]``, H and W multiples of ``config.subsample``).
        preds: both orderings ``(i, j)`` and ``(j, i)`` of every pair, with descriptors and their confidences.
        config: the official knobs (defaults when ``None``).
        priors: ``K`` / ``focal`` become the official ``init[view]['intrinsics']``: the starting focal
            (``mean(fx, fy)``) and principal point, refined in the fine stage like the official's (it has no way to
            hold them fixed short of freezing the whole camera); ``shared_intrinsics`` as the config's; known poses
            are refused (the official's ``init['cam2w']`` is not implemented).
        matches: correspondences to use instead of the official extraction from the descriptors (one ``Matches``
            per unordered pair; pairs without one are not matched).

    Returns:
        ``Scene`` with ``T_world_cam [N, 4, 4]`` (the official world frame), ``K [N, 3, 3]``, dense z-depth and the
        official output confidence (canonical ``sum(w²)/sum(w)`` with ``w = conf - 0.999``, after
        ``clean_pointcloud`` when ``config.clean_depth``), ``registered`` and ``info`` (``unregistered`` names,
        ``fallback_pairs``, ``n_matches``, losses, seconds).

    Raises:
        AlignmentError: inconsistent inputs, unsupported priors, or fewer than two views that can be placed.
    """
    t0 = time.perf_counter()
    cfg = config or Mast3rSfmConfig()
    if priors is not None and priors.T_world_cam:
        raise AlignmentError(
            "method='mast3r-sfm' reproduces the official code, which cannot start from known poses; "
            "use method='sparse' for pose priors"
        )
    shared = cfg.shared_intrinsics or bool(priors is not None and priors.shared_intrinsics)
    dtype = getattr(torch, cfg.dtype)
    s = cfg.subsample
    n_all = len(views)
    by_key = _check_inputs(views, preds, s)

    def pred(i: int, j: int) -> PairPrediction:
        return by_key[(i, j)]

    # 1. correspondences of every unordered pair, visited as (larger, smaller) like the official make_pairs
    given = _given_matches(matches, by_key) if matches is not None else None
    blind = _pair_blind_conf_views(by_key.values()) if given is None else []
    if blind:
        logger.warning(
            "method='mast3r-sfm': the descriptor confidence of %d of %d views is the same in all their pairs (not a "
            "MASt3R head's); the official matcher then keeps confident matches on pixels the partner does not see "
            "and can diverge on wide baselines (docs/alignment.md); prefer method='sparse'",
            len(blind),
            n_all,
        )
    pair_matches: dict[tuple[int, int], PairMatches] = {}
    for a, b in sorted({(max(k), min(k)) for k in by_key}):
        if given is not None:
            if (a, b) not in given:
                continue
            xy_a, xy_b, conf = given[(a, b)]
        else:
            p, q = pred(a, b), pred(b, a)
            xy_a, xy_b, conf = extract_correspondences(
                (p.desc_i, p.desc_j, q.desc_i, q.desc_j),
                (p.desc_conf_i, p.desc_conf_j, q.desc_conf_i, q.desc_conf_j),
                subsample=s,
            )
        if len(conf) == 0:
            logger.warning("pair (%d, %d) has no match; skipped", a, b)
            continue
        pair_matches[(a, b)] = PairMatches(a, b, xy_a, xy_b, conf.to(dtype))
    matches = pair_matches
    placed = sorted({k for pair in matches for k in pair})
    unplaced = [k for k in range(n_all) if k not in placed]
    if len(placed) < 2:
        raise AlignmentError(f"method='mast3r-sfm' could place {len(placed)} of {n_all} views (no matched pair)")
    if unplaced:
        logger.warning("views left unregistered (no usable pair): %s", [views[k].name for k in unplaced])
    new = {k: i for i, k in enumerate(placed)}
    n = len(placed)
    first = [(new[a], new[b]) for a, b in matches]
    tmp_pairs = first + [(b, a) for a, b in first]  # official order: each pair, then all reversed

    def match_of(x: int, y: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixels of placed view x matched with y, confidences)."""
        a, b = placed[x], placed[y]
        m = matches.get((a, b))
        return (m.xy_a, m.conf) if m is not None else (matches[(b, a)].xy_b, matches[(b, a)].conf)

    def is_ok(x: int, y: int) -> bool:
        """The pair's best match is confident enough for the matching losses (else: regression fallback)."""
        return bool(match_of(x, y)[1].max() > cfg.matching_conf_thr)

    data = _prepare_views(n, tmp_pairs, lambda x, y: pred(placed[x], placed[y]), match_of, s, dtype)
    anchored, terms = _loss_terms(data, tmp_pairs, match_of, is_ok)

    # 4. kinematic tree and optimisation
    imsizes = torch.tensor([(W, H) for H, W in data.shapes])
    n_matches = np.zeros((n, n), np.float32)
    for x, y in first:
        n_matches[x, y] = n_matches[y, x] = len(match_of(x, y)[1])
    n_anchors = ((imsizes // s).prod(dim=1)).numpy()
    root, edges = kinematic_tree(n_matches, n_anchors, cfg.kinematic_mode)
    canon_focals = data.canon_focals
    init_focals, pp_init = _init_intrinsics(priors, placed, canon_focals, imsizes, dtype)
    model = SparseModel(
        imsizes, init_focals, data.core_depth, root, edges, shared_intrinsics=shared,
        depth_mode=cfg.depth_mode, exp_depth=cfg.exp_depth, mean_conf=torch.stack([c.mean() for c in data.conf]),
        pp_init=pp_init, dtype=dtype,
    )  # fmt: skip
    res = optimise(model, anchored, terms, cfg)
    K, cam2w, depth = res["K"], res["cam2w"], res["depth"]

    # 5. dense output: every pixel through its anchor; official output confidence
    with torch.no_grad():
        # offsets are compensated with the canonical focals here (official: reloaded from the canonical cache),
        # with the init-overwritten ones during the optimisation
        world, z = densify(K, cam2w, depth, canon_focals, data.canon2, data.anchor_start, s)
        confs = clean_pointcloud(data.conf, K, cam2w, z, world) if cfg.clean_depth else data.conf

    T_out = np.tile(np.eye(4), (n_all, 1, 1))
    K_out = np.stack([_default_K(*v.true_shape) for v in views])
    depth_out = [np.zeros(v.true_shape, np.float32) for v in views]
    conf_out = [np.zeros(v.true_shape, np.float32) for v in views]
    registered = np.zeros(n_all, bool)
    for x, k in enumerate(placed):
        T_out[k] = cam2w[x].double().numpy()
        K_out[k] = K[x].double().numpy()
        depth_out[k] = z[x].float().numpy()
        conf_out[k] = confs[x].float().numpy()
        registered[k] = True
    fallback = sorted([min(k), max(k)] for k, m in matches.items() if not bool(m.conf.max() > cfg.matching_conf_thr))
    info = {
        "method": "mast3r-sfm",
        "config": dataclasses.asdict(cfg),
        "unregistered": [views[k].name for k in unplaced],
        "fallback_pairs": fallback,
        "n_matches": {f"{min(k)}_{max(k)}": len(m) for k, m in matches.items()},
        "kinematic_tree": {"root": placed[root], "edges": [(placed[i], placed[j]) for i, j in edges]},
        "loss_coarse": res["loss_coarse"],
        "loss_fine": res["loss_fine"],
        "t_total_s": time.perf_counter() - t0,
        "n_registered": int(registered.sum()),
    }
    return Scene(
        T_world_cam=T_out,
        K=K_out,
        depth=depth_out,
        conf=conf_out,
        registered=registered,
        info=info,
        **scene_view_fields(views),
    )
