"""``python -m training.feedforward --preset small`` (see ``training.feedforward.cli``)."""

import sys

from training.feedforward.cli import main

if __name__ == "__main__":
    sys.exit(main())
