"""One correspondence set per unordered pair, for the sparse alignment.

Inference decodes every unordered pair ``{i, j}`` in both orders, which gives four descriptor maps
(``(i, j)``: desc of i and of j; ``(j, i)``: desc of j and of i). The official sparse GA
(``extract_correspondences``, reference/mast3r.md §7) runs the reciprocal matcher on both predictions and merges the
results into ONE unique set of pixel pairs per unordered pair. Matching ``(i, j)`` and ``(j, i)`` separately and
handing both lists to the aligner would count every pixel pair both directions agree on twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from recon.matching import match_pair
from recon.progress import step
from recon.types import Matches, PairPrediction

logger = logging.getLogger(__name__)


def match_unordered_pairs(preds: Sequence[PairPrediction], subsample: int = 8, conf_thr: float = 0.0) -> list[Matches]:
    """Correspondences of every unordered pair, merged from its (up to) two ordered predictions.

    Args:
        preds: ordered pair predictions with descriptors; a pair may be present in one order or both.
        subsample: seed-grid step of the matcher.
        conf_thr: drop matches whose ``sqrt(desc_conf_i * desc_conf_j)`` is below this.

    Returns:
        One ``Matches`` per unordered pair, in the order the pairs first appear, with ``(i, j)`` the first
        prediction's order; pixel pairs are unique.

    Raises:
        ValueError: a prediction without descriptors (DUSt3R heads).
    """
    if hasattr(preds, "keys") and hasattr(preds, "get"):  # a PairStore: load each prediction only when needed
        keys, get = list(preds.keys()), preds.get
    else:
        by_key = {p.key: p for p in preds}
        keys, get = list(by_key), lambda i, j: by_key.get((i, j))
    seen: set[tuple[int, int]] = set()
    out = []
    n_pairs = len({(min(i, j), max(i, j)) for i, j in keys})
    for i, j in keys:
        if (min(i, j), max(i, j)) in seen:
            continue
        seen.add((min(i, j), max(i, j)))
        out.append(match_pair(get(i, j), subsample=subsample, conf_thr=conf_thr, reverse=get(j, i)))
        step("matching", len(out), n_pairs)
    logger.debug("matched %d unordered pairs from %d predictions", len(out), len(preds))
    return out
