"""``python -m training.chain``: see ``training.chain.run``."""

import sys

from training.chain.run import main

if __name__ == "__main__":
    sys.exit(main())
