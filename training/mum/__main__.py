"""``python -m training.mum --config cfg.json`` (see ``training.mum.cli``)."""

import sys

from training.mum.cli import main

if __name__ == "__main__":
    sys.exit(main())
