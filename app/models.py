"""The models a viewer can offer: the one it was started with plus every named release already cached.

Models are loaded once (on first use, under a lock) and shared by all sessions; inference only reads them.
Releases that are not in the cache are listed with the command that fetches them.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOption:
    """One entry of the model menu.

    Attributes:
        key: what ``ModelStore.get`` takes (a weights name, a checkpoint path, or ``GIVEN``).
        label: the text shown.
        present: loadable now without network.
        hint: how to make an absent entry present.
    """

    key: str
    label: str
    present: bool
    hint: str = ""


class ModelStore:
    """Loads each model once and hands the same instance to every session.

    Args:
        initial: the start-up model: an ``nn.Module`` (tests), a checkpoint path or a weights name; loaded now,
            so a bad file fails at start rather than at a user's first click.
        device: where models are loaded (``auto``: CUDA when available).
    """

    GIVEN = "given model"

    def __init__(self, initial=None, device: str = "auto"):
        from recon.pipeline import resolve_device

        self.device = resolve_device(device)
        self._lock = threading.Lock()
        self._models: dict[str, object] = {}
        self._labels: dict[str, str] = {}
        self.default_key: str | None = None
        if initial is None:
            return
        if isinstance(initial, (str, os.PathLike)):
            key = str(initial)
            self._labels[key] = Path(key).name if Path(key).exists() else key
            self.get(key)
        else:
            key = self.GIVEN
            self._models[key] = initial.to(self.device).eval()
            self._labels[key] = f"{type(initial).__name__} (given at start)"
        self.default_key = key

    def options(self) -> list[ModelOption]:
        """The start-up model first, then every named model release, present or not."""
        from backbone import hub

        out = [ModelOption(k, self._labels[k], True) for k in self._labels]
        for entry in hub.list_weights():
            if entry.name in self._labels or entry.kind == "backbone":
                continue
            present = hub.cached_path(entry.name) is not None
            if entry.kind == "decoder":
                # A DUNE-MASt3R decoder needs its encoder too; both must be cached.
                hint = f"`recon weights download {entry.name}` (and its DUNE encoder)"
            else:
                hint = f"`recon weights download {entry.name}`"
            out.append(ModelOption(entry.name, f"{entry.name} ({entry.family}, {entry.image_size}px)", present, hint))
        return out

    def get(self, key: str):
        """The model for ``key``, loaded on first use.

        Raises:
            KeyError: ``key`` is neither loaded nor a present option.
            CheckpointError / WeightsError: the file cannot be loaded (message names why).
        """
        with self._lock:
            if key in self._models:
                return self._models[key]
            if key not in self._labels:
                from backbone import hub

                if hub.cached_path(key) is None:
                    raise KeyError(f"model {key!r} is not available on this server")
            import recon

            logger.info("loading model %s on %s", key, self.device)
            model = recon.load_model(key, device=self.device).eval()
            self._models[key] = model
            self._labels.setdefault(key, key)
            return model
