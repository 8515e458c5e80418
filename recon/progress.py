"""Step-level progress of the long loops (encoder batches, decoder batches, matching, alignment iterations).

``reconstruct`` reports stages; a front-end that must follow a run more finely, or stop it, installs a callback
around its call with ``step_hook(fn)``, and the loops call ``step(stage, done, total)`` after each step. The
callback runs in the loop's thread and may raise (the app raises to cancel a run): the exception then leaves the
loop between two steps, before any result is returned. Without a hook ``step`` costs one context-variable read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# (stage, steps done, steps in all, detail such as the alignment phase)
StepFn = Callable[[str, int, int, str], None]

_HOOK: ContextVar[StepFn | None] = ContextVar("recon_step_hook", default=None)


def step(stage: str, done: int, total: int, detail: str = "") -> None:
    """Tell the installed hook (if any) that ``done`` of ``total`` steps of ``stage`` are finished."""
    hook = _HOOK.get()
    if hook is not None:
        hook(stage, done, total, detail)


@contextmanager
def step_hook(fn: StepFn) -> Iterator[None]:
    """Call ``fn`` at every ``step`` made in this thread (context) until the block ends."""
    token = _HOOK.set(fn)
    try:
        yield
    finally:
        _HOOK.reset(token)
