"""The families' own commands beside training: `python -m train.<family> <command> overrides`."""

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig

from train.core.registry import compose_config


def run_command(
    prog: str, argv: Sequence[str], commands: dict[str, Callable[[DictConfig], dict[str, Any]]]
) -> dict[str, Any]:
    """Runs `commands[argv[0]]` on the config composed from the other arguments; prints JSON."""
    if not argv or argv[0] not in commands:
        names = "|".join(commands)
        sys.exit(f"usage: python -m {prog} {names} experiment=<name> [hydra overrides]")
    result = commands[argv[0]](compose_config(argv[1:]))
    print(json.dumps(result, indent=2))
    return result
