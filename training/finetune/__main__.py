"""``python -m training.finetune --config cfg.json`` (see ``training.finetune.cli``)."""

import sys

from training.finetune.cli import main

if __name__ == "__main__":
    sys.exit(main())
