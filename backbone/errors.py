"""The base class of every error the user can fix (``recon.errors.UserError`` re-exports it).

It lives here, at the bottom of the import graph (``backbone <- recon <- {training, app}``), so that backbone's
own errors (``CheckpointError``, ``WeightsError``) can derive from it. Standard library only.
"""


class UserError(Exception):
    """An error caused by the user's input (a path, a flag, a file's content, missing weights).

    Its message is one line that names the input and says what would be valid; front-ends print it without a
    traceback (the CLI: ``error: <message>`` and exit code 2; the app: a message box).
    """


class CheckpointError(UserError, ValueError):
    """A checkpoint cannot be found or read, or does not match the model; the message names the file or keys."""
