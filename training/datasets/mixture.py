"""The MASt3R README's dataset expressions, parsed safely, and the pair mixture they describe.

``"57_000 @ Habitat512(1_000_000, split='train', root='/data/habitat') + 68_400 @ BlendedMVS(root=...)"``: terms
joined by ``+``; a term is ``count @ Name(args)`` (``count`` pairs of that dataset per epoch, spread evenly over
its own pairs) or ``Name(args)`` (all its pairs once). ``Name`` is a key of ``training.datasets.pairs.READERS`` (or
``Synthetic`` for rendered scenes); arguments are Python literals only. The text is parsed with ``ast`` and
checked node by node; nothing is evaluated or imported from it.

Per-term augmentation arguments of the README (``aug_crop``, ``aug_monocular``, ``n_corres``, ``nneg``,
``transform``) set that term's ``PairDataset`` options; ``resolution`` and ``seed`` are global in recon
(``data.resolutions``, ``train.seed``) and are ignored with a log line, as are the README's arguments of
unreleased code (``cosxl_augmentations``, ``mask_sky``, ``pairs_subset``, ``optical_center_is_centered``).

Sampling: ``MixtureDataset`` gives term ``k`` exactly ``count_k`` indices per epoch; the training loop's
``InfiniteDistributedSampler`` shuffles them with ``seed + epoch`` and resumes mid-epoch from its position, so
the proportions are exact per epoch and a resumed run sees the same pairs.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass, field
from typing import Any

from training.common.config import DataConfigError

logger = logging.getLogger(__name__)

AUG_KEYS = ("aug_crop", "aug_monocular", "n_corres", "nneg", "transform")
IGNORED_KEYS = ("resolution", "seed", "cosxl_augmentations", "mask_sky", "pairs_subset", "optical_center_is_centered")
# Positional arguments a reader accepts, in order (the README writes ``Habitat512(1_000_000, ...)``).
POSITIONAL = {"Habitat": ("size",), "Habitat512": ("size",), "Synthetic": ("scenes",)}


class MixtureError(DataConfigError):
    """A mixture expression is malformed or names an unknown dataset / argument; the message says where."""


@dataclass(frozen=True)
class MixtureTerm:
    """One ``count @ Name(kwargs)`` term."""

    dataset: str
    """Reader name."""
    count: int | None
    """Pairs per epoch (``None``: the dataset's own number of pairs)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Reader arguments (augmentation and ignored keys removed)."""
    aug: dict[str, Any] = field(default_factory=dict)
    """Per-term augmentation overrides (``AUG_KEYS``)."""


def _literal(node: ast.AST, where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        raise MixtureError(f"{where}: only literal values are allowed, got {ast.unparse(node)!r}") from None


def _term(node: ast.AST, text: str) -> MixtureTerm:
    count = None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        count = _literal(node.left, "count")
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            raise MixtureError(f"the count before '@' must be a positive integer, got {ast.unparse(node.left)!r}")
        node = node.right
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise MixtureError(f"expected 'N @ Dataset(...)' or 'Dataset(...)', got {ast.unparse(node)!r} in {text!r}")
    name = node.func.id
    names = POSITIONAL.get(name, ())
    if len(node.args) > len(names):
        raise MixtureError(f"{name}: takes {len(names)} positional argument(s) {list(names)}, got {len(node.args)}")
    kwargs = {k: _literal(a, f"{name} argument {k}") for k, a in zip(names, node.args, strict=False)}
    for kw in node.keywords:
        if kw.arg is None:
            raise MixtureError(f"{name}: '**' arguments are not allowed")
        kwargs[kw.arg] = _literal(kw.value, f"{name} argument {kw.arg}")
    aug = {k: kwargs.pop(k) for k in AUG_KEYS if k in kwargs}
    ignored = [k for k in IGNORED_KEYS if kwargs.pop(k, None) is not None]
    if ignored:
        logger.info("%s: ignoring %s (global in recon or not in the released code)", name, ignored)
    return MixtureTerm(name, count, kwargs, aug)


def parse_mixture(text: str) -> list[MixtureTerm]:
    """``"N @ A(...) + B(...)"`` -> terms, in order.

    Raises:
        MixtureError: a syntax error, a non-literal value, an operator other than ``+`` / ``@``.
    """
    if not text.strip():
        raise MixtureError("empty mixture expression")
    if len(text) > 100_000:
        raise MixtureError("mixture expression longer than 100,000 characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as err:
        raise MixtureError(f"mixture expression: syntax error at column {err.offset}: {err.msg}") from None
    terms: list[ast.AST] = []
    stack = [tree]
    while stack:  # flatten the left-associative '+' chain, keeping the order
        node = stack.pop()
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            stack += [node.right, node.left]
        else:
            terms.append(node)
    return [_term(t, text) for t in terms]


def _aug_options(aug: dict[str, Any], data) -> dict[str, Any]:
    """``PairDataset`` keyword arguments: the config's, overridden by a term's README-style arguments."""
    transform = aug.get("transform", "ColorJitter" if data.color_jitter else "ImgNorm")
    if transform not in ("ColorJitter", "ImgNorm"):
        raise MixtureError(f"transform must be 'ColorJitter' or 'ImgNorm', got {transform!r}")
    aug_crop = aug.get("aug_crop", data.aug_crop)
    if aug_crop is False:  # the README's "no crop augmentation"
        aug_crop = "centred"
    return dict(
        n_corres=aug.get("n_corres", data.n_corres),
        neg_fraction=aug.get("nneg", data.neg_fraction),
        color_jitter=transform == "ColorJitter",
        zoom_range=data.zoom_range,
        swap_prob=data.swap_prob,
        aug_crop=aug_crop,
        n_tentative_crops=data.n_tentative_crops,
        aug_monocular=aug.get("aug_monocular", data.aug_monocular),
    )


def build_reader(term: MixtureTerm):
    """The reader (a ``PairReader`` or ``SyntheticPairs``) of one term.

    Raises:
        MixtureError: unknown dataset name or argument (the valid ones are listed).
        LayoutError: the root does not hold the dataset's layout.
    """
    import inspect

    from training.datasets.pairs import READERS
    from training.finetune.datasets import SyntheticPairs

    cls = SyntheticPairs if term.dataset == "Synthetic" else READERS.get(term.dataset)
    if cls is None:
        raise MixtureError(f"unknown dataset {term.dataset!r}; known: {sorted([*READERS, 'Synthetic'])}")
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(term.kwargs) - set(params))
    if unknown:
        raise MixtureError(f"{term.dataset}: unknown argument(s) {unknown}; valid: {params}")
    try:
        reader = cls(**term.kwargs)
    except TypeError as err:
        raise MixtureError(f"{term.dataset}: {err}") from None
    if not getattr(reader, "has_depth", True):
        raise MixtureError(f"{term.dataset}: no depth in this release; pass depth_suffix=... to read your own depth")
    if len(reader) == 0:
        raise MixtureError(f"{term.dataset}: no pair under {term.kwargs.get('root', '')!r}")
    return reader


def build_pair_mixture(text: str, data):
    """The training ``MixtureDataset`` of a mixture expression, with ``data`` (finetune ``DataConfig``) defaults.

    Returns:
        ``MixtureDataset`` whose term ``k`` holds exactly ``count_k`` indices (its own length when no count).
    """
    from training.finetune.datasets import MixtureDataset, PairDataset

    datasets, counts = [], []
    for term in parse_mixture(text):
        reader = build_reader(term)
        datasets.append(PairDataset(reader, **_aug_options(term.aug, data)))
        counts.append(term.count or len(reader))
        logger.info("mixture: %d pairs/epoch of %r", counts[-1], reader)
    return MixtureDataset(datasets, counts, sum(counts))


# The MASt3R release mixture (README "Our Hyperparameters"): pairs per epoch, reader, reader arguments. Left out,
# for want of a public layout or reader: StaticThings3D (22,800) and InternalUnreleasedDataset (34,200). DL3DV's
# two README terms ('nlight' and 'not-nlight', 57,000 each) are one term here: the split rule is not released.
MAST3R_README_TERMS: tuple[tuple[int, str, dict[str, Any]], ...] = (
    (57_000, "Habitat512", {"size": 1_000_000, "split": "train"}),
    (68_400, "BlendedMVS", {"split": "train"}),
    (68_400, "MegaDepth", {"split": "train"}),
    (45_600, "ARKitScenes", {"split": "train"}),
    (22_800, "Co3d", {"split": "train", "mask_bg": "rand"}),
    (45_600, "ScanNetpp", {"split": "train"}),
    (45_600, "TartanAir", {}),
    (4_560, "UnrealStereo4K", {}),
    (1_140, "VirtualKitti", {}),
    (22_800, "WildRgbd", {"split": "train", "mask_bg": "rand"}),
    (145_920, "NianticMapFree", {"split": "train"}),
    (114_000, "DL3DV", {}),
)


def mast3r_mixture(roots: dict[str, str], **extra: dict[str, Any]) -> str:
    """The README mixture for the datasets present in ``roots`` (``{reader name: root}``), as an expression.

    Args:
        roots: dataset roots by the names of ``MAST3R_README_TERMS``; datasets not given are left out.
        extra: more arguments per dataset, e.g. ``NianticMapFree={"depth_suffix": ".depth.png"}``.

    Raises:
        MixtureError: a name of ``roots`` or ``extra`` is not in the mixture.
    """
    known = {name for _, name, _ in MAST3R_README_TERMS}
    unknown = sorted((set(roots) | set(extra)) - known)
    if unknown:
        raise MixtureError(f"not in the MASt3R mixture: {unknown}; known: {sorted(known)}")
    terms = []
    for count, name, kwargs in MAST3R_README_TERMS:
        if name in roots:
            args = {"root": str(roots[name]), **kwargs, **extra.get(name, {})}
            terms.append(f"{count} @ {name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")")
    return " + ".join(terms)
