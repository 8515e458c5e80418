"""One error base for everything a user can fix: ``UserError``.

Every such error derives from it where it is defined (``ReconstructionError``, ``ImageLoadError``,
``AlignmentError``, ``CheckpointError``, ``WeightsError`` and its subclasses, training's ``ConfigError`` /
``DataConfigError`` / ``ExportError``, the evaluators' data errors), so a front-end catches one type::

    from recon.errors import UserError
    try:
        scene, report = reconstruct(...)
    except UserError as err:
        show(str(err))  # one line, no traceback

Anything else that escapes is a bug and keeps its traceback. The class itself is defined in ``backbone.errors``
(the bottom of the import graph) so that backbone's errors can derive from it too.
"""

from backbone.errors import UserError

__all__ = ["UserError"]
