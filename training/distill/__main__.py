"""``python -m training.distill --config cfg.json`` (see ``training.distill.cli``)."""

import sys

from training.distill.cli import main

if __name__ == "__main__":
    sys.exit(main())
