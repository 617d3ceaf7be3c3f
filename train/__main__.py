"""Entry point: `python -m train experiment=cora_gcn` (any Hydra override works)."""

import json

import hydra
from hydra.utils import get_method
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> dict:
    """Runs the task's runner (config -> data -> model -> fit -> evaluate -> export)."""
    metrics = get_method(cfg.runner)(cfg)
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
