"""`python -m train.imdb eval experiment=imdb_bert [hydra overrides]`: evaluates an artifact."""

import sys
from typing import Any

import torch
from omegaconf import DictConfig

from train.core.cli import run_command
from train.imdb.run import evaluate_artifact


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """The artifact's accuracy, with the thread count it ran on."""
    return evaluate_artifact(cfg) | {"threads": torch.get_num_threads()}


if __name__ == "__main__":
    run_command("train.imdb", sys.argv[1:], {"eval": evaluate})
