"""recon-tiny, the model shipped inside the package, and the one place that decides recon's default model.

``recon-tiny.safetensors`` (this folder; an *embedded* entry of ``backbone/weights.json``, so
``recon.load_model("recon-tiny")`` reads it with its recorded size and sha256 checked and never downloads) is the
model of ``python -m training.chain``: a MuM-tiny encoder distilled into a DUNE-tiny student, and a MASt3R decoder
finetuned on the frozen student, all trained by recon on scenes of its own synthetic renderer (recipe, figures and
curves: ``docs/recon-tiny.md``). It is small (4.7 M parameters at 112 px) and far less accurate than the releases.

``default_model()`` is the model ``recon run`` and the app use when none is given.
"""

from __future__ import annotations

TINY_NAME = "recon-tiny"
"""Name of the embedded model (``recon.load_model("recon-tiny")``, ``recon run --model recon-tiny``)."""
TINY_LABEL = "recon-tiny: a small model trained on synthetic scenes (docs/recon-tiny.md)"
"""How outputs name the embedded model: what it is, so that nobody takes its accuracy for a release's."""


def is_tiny(name: object) -> bool:
    """Whether ``name`` names recon-tiny (case-insensitive)."""
    return isinstance(name, str) and name.lower() == TINY_NAME


def default_model() -> str:
    """The model used when none is given: the first full model release in the weights cache (in the weights
    table's order), else ``recon-tiny``. Never downloads."""
    from backbone import hub

    for entry in hub.list_weights(kind="model"):
        if entry.embedded is None and hub.cached_path(entry.name) is not None:
            return entry.name
    return TINY_NAME


def describe(name: object) -> str:
    """``TINY_LABEL`` for recon-tiny, else ``str(name)`` (what outputs print as the model used)."""
    return TINY_LABEL if is_tiny(name) else str(name)
