"""`python -m train.flowers score experiment=<name>`: scores the test photos of a finished run."""

import json
import sys

from train.core.registry import compose_config
from train.flowers.run import score_test


def main(argv: list[str]) -> None:
    if not argv or argv[0] != "score":
        sys.exit("usage: python -m train.flowers score experiment=flowers_cnn [hydra overrides]")
    print(json.dumps(score_test(compose_config(argv[1:])), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
