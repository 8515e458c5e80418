"""The models a viewer can offer: the one it was started with plus every named release already cached.

Models are loaded once (on first use, under a lock) and shared by all sessions; inference only reads them.
Releases that are not in the cache are listed with the command that fetches them. Started with no model, the app
takes the best one present without network (``choose_startup_model``): a cached release, else recon-tiny (shipped
with recon: a small model trained on synthetic scenes), and says so on the page.

Menu keys never hold a server path (they appear in the page and the API description): a checkpoint is offered
as ``checkpoint:<file name>``.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from recon.errors import UserError

logger = logging.getLogger(__name__)

RANDOM_KEY = "random:micro"
RANDOM_NOTE = "random weights: the geometry is meaningless; this checks the install"


class ModelUnavailableError(UserError, LookupError):
    """A model the page asked for is neither loaded nor cached on this server."""


@dataclass(frozen=True)
class ModelOption:
    """One entry of the model menu.

    Attributes:
        key: what ``ModelStore.get`` takes (a weights name, ``checkpoint:<name>``, ``RANDOM_KEY`` or ``GIVEN``).
        label: the text shown.
        present: loadable now without network.
        hint: how to make an absent entry present.
    """

    key: str
    label: str
    present: bool
    hint: str = ""


@dataclass(frozen=True)
class StartupChoice:
    """The model the app starts with and why (logged at start and shown in the page's banner).

    Attributes:
        model: what ``ModelStore`` takes: a weights name, a checkpoint path, ``RANDOM_KEY`` or a module.
        reason: one sentence for the log and the banner.
    """

    model: object
    reason: str


def random_model(seed: int = 0):
    """A seeded random MASt3R micro model (2-block encoder, narrow DPT head) that runs every stage of the pipeline
    in seconds on a CPU; its geometry is meaningless. The seed makes every start give the same model (and results).
    """
    import torch

    from recon.model.heads import HeadConfig
    from recon.model.presets import build_model

    with torch.random.fork_rng(devices=[]):  # leave the process's random state as it was
        torch.manual_seed(seed)
        # mast3r_tiny with a narrow DPT: the full-width DPT convolutions cost ~1 s of CPU per decoder pass.
        model = build_model("mast3r_tiny", head=HeadConfig(dpt_feature_dim=16, dpt_layer_dims=(8, 16, 32, 64)))
    with torch.no_grad():
        for head in (model.head1, model.head2):
            # Channels x, y, z, conf of the last DPT layer: a positive z bias puts the random points in front of
            # the cameras (unbiased, about half are behind them and the alignment rightly places no view), and a
            # conf bias gives raw confidences near 5.5 like a trained network's (unbiased, ~2: below the default
            # display threshold 1.5 of the official sparse scale, so the page would show no point).
            head.dpt.head[-1].bias[2] += 2.0
            head.dpt.head[-1].bias[3] += 1.5
    return model.eval()


def choose_startup_model(model: str | None = None, checkpoint: Path | None = None) -> StartupChoice:
    """The model to start with: the one asked for, else recon's default (``recon.weights.default_model``)."""
    if checkpoint is not None:
        return StartupChoice(str(checkpoint), f"checkpoint {Path(checkpoint).name} given with --checkpoint")
    if model is not None:
        return StartupChoice(model, f"model {model} given with --model")
    from recon.weights import TINY_LABEL, default_model, is_tiny

    # recon's default (recon.weights.default_model): the first full model release cached, else recon-tiny.
    name = default_model()
    if not is_tiny(name):
        return StartupChoice(name, f"{name}: the first model release found in the weights cache")
    return StartupChoice(
        name,
        f"no model release is in the weights cache and none was given, so {TINY_LABEL} is used; "
        "`recon weights download mast3r_vitl16_512` or `--checkpoint FILE` gives far more accurate results",
    )


class ModelStore:
    """Loads each model once and hands the same instance to every session.

    Args:
        initial: the start-up model: an ``nn.Module`` (tests), a checkpoint path, a weights name or ``RANDOM_KEY``;
            loaded now, so a bad file fails at start rather than at a user's first click.
        device: where models are loaded (``auto``: CUDA when available).
    """

    GIVEN = "given model"

    def __init__(self, initial=None, device: str = "auto"):
        from recon.pipeline import resolve_device

        self.device = resolve_device(device)
        self._lock = threading.Lock()
        self._models: dict[str, object] = {}
        self._labels: dict[str, str] = {}
        self._paths: dict[str, str] = {}  # menu key -> what recon.load_model takes (kept off the page)
        self.default_key: str | None = None
        if initial is None:
            return
        if isinstance(initial, str) and initial == RANDOM_KEY:
            key = RANDOM_KEY
            self._models[key] = random_model().to(self.device)
            self._labels[key] = "random micro model (install check)"
        elif isinstance(initial, (str, os.PathLike)):
            path = Path(initial)
            key = f"checkpoint:{path.name}" if path.exists() else str(initial)
            from recon.weights import describe

            self._labels[key] = describe(key)
            self._paths[key] = str(initial)
            self.get(key)
        else:
            key = self.GIVEN
            self._models[key] = initial.to(self.device).eval()
            self._labels[key] = f"{type(initial).__name__} (given at start)"
        self.default_key = key

    def label(self, key: str | None) -> str:
        """The menu text of ``key``."""
        return self._labels.get(key, str(key)) if key is not None else "none"

    def is_random(self, key: str | None) -> bool:
        """Whether ``key`` names a model with random weights (its geometry is meaningless)."""
        return key is not None and key.startswith("random:")

    def options(self) -> list[ModelOption]:
        """The start-up model first, then every named model release, present or not."""
        from backbone import hub
        from recon.weights import describe

        out = [ModelOption(k, self._labels[k], True) for k in self._labels]
        for entry in hub.list_weights():
            if entry.name in self._labels or entry.kind == "backbone":
                continue
            present = hub.cached_path(entry.name) is not None
            if entry.embedded is not None:  # recon-tiny: ships with recon
                out.append(ModelOption(entry.name, describe(entry.name), present, "reinstall recon3r"))
                continue
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
            ModelUnavailableError: ``key`` is neither loaded nor a present option.
            CheckpointError / WeightsError: the file cannot be loaded (message names why).
        """
        with self._lock:
            if key in self._models:
                return self._models[key]
            if key not in self._labels:
                from backbone import hub

                if hub.cached_path(key) is None:
                    raise ModelUnavailableError(f"model {key!r} is not available on this server")
            import recon

            logger.info("loading model %s on %s", key, self.device)
            model = recon.load_model(self._paths.get(key, key), device=self.device).eval()
            self._models[key] = model
            self._labels.setdefault(key, key)
            return model
