"""`python -m train.imdb eval experiment=imdb_bert [hydra overrides]`: evaluates an artifact."""

import json
import sys
from collections.abc import Sequence

import torch

from train.core.registry import compose_config
from train.imdb.run import evaluate_artifact


def main(argv: Sequence[str]) -> None:
    if not argv or argv[0] != "eval":
        sys.exit("usage: python -m train.imdb eval experiment=imdb_bert [hydra overrides]")
    result = evaluate_artifact(compose_config(argv[1:]))
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
