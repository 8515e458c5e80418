"""Model-backed predictors, built from a weights name or checkpoint path (placeholder until wired)."""

from __future__ import annotations


class ModelUnavailableError(RuntimeError):
    """The model-backed predictor cannot be built in this installation."""


def build(source: str, mode: str = "pairwise", backbone=None, image_size=None, device="auto"):
    raise ModelUnavailableError("model-backed predictors are not wired yet; use --oracle")
