"""``python -m recon`` (and ``torchrun -m recon``, docs/eval.md) runs the ``recon`` command of the ``cli`` package.

An entry-point script, never imported by the library: the one place below ``cli`` allowed to import it.
"""

import sys

from cli import main

sys.exit(main())
