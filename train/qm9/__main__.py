"""`python -m train.qm9 reexport experiment=qm9_et [hydra overrides]`: re-export, no training."""

import json
import sys
from collections.abc import Sequence

from train.core.registry import compose_config
from train.qm9.run import reexport


def main(argv: Sequence[str]) -> None:
    if not argv or argv[0] != "reexport":
        sys.exit("usage: python -m train.qm9 reexport experiment=qm9_et [hydra overrides]")
    print(json.dumps(reexport(compose_config(argv[1:])), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
