"""`python -m train.flowers score experiment=<name>`: scores the test photos of a finished run."""

import sys

from train.core.cli import run_command
from train.flowers.run import score_test

if __name__ == "__main__":
    run_command("train.flowers", sys.argv[1:], {"score": score_test})
