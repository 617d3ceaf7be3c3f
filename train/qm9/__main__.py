"""`python -m train.qm9 reexport experiment=qm9_et [hydra overrides]`: re-export, no training."""

import sys

from train.core.cli import run_command
from train.qm9.run import reexport

if __name__ == "__main__":
    run_command("train.qm9", sys.argv[1:], {"reexport": reexport})
