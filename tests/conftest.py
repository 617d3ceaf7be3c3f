"""Fixtures shared by both tiers: the data mirror, the data root, and tiny training runs."""

import os
from pathlib import Path

import pytest

from train.core.registry import CONFIGS, experiment_config, spec

ROOT = Path(__file__).resolve().parent.parent
__all__ = ["CONFIGS", "GRAPH_MODELS", "ROOT", "mirror", "tiny_cfg"]  # CONFIGS: family tests
# The models whose handlers the graph tests check one by one (tests/unit/test_export.py,
# tests/e2e/test_graph_serving.py).
GRAPH_MODELS = ("cora_gcn", "cora_gat", "mutag_gcn")


def mirror() -> str | None:
    """DATA_MIRROR as CI sets it (../shared/data), resolved against the repo root."""
    value = os.environ.get("DATA_MIRROR")
    if not value:
        return None
    path = Path(value)
    return str(path if path.is_absolute() else (ROOT / path).resolve())


@pytest.fixture(scope="session")
def data_root() -> str:
    """The project's data directory (links into the mirror; PyG's processed files live here)."""
    return str(ROOT / "data")


def tiny_cfg(experiment: str, artifacts: Path, *overrides: str):
    """Composes the experiment's real config with the tiny trainer and no logger."""
    return experiment_config(
        experiment,
        "trainer=tiny",
        "logger=none",
        f"paths.artifacts={artifacts}/{experiment}",
        f"paths.data={ROOT / 'data'}",
        *overrides,
    )


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory) -> Path:
    """Trains the graph models of the unit and e2e graph tests with their archive.yaml's tiny
    overrides and exports them; returns the artifacts root (tests/e2e adds the others to it)."""
    from hydra.utils import get_method

    root = tmp_path_factory.mktemp("artifacts")
    for name in GRAPH_MODELS:
        model = spec(name)
        cfg = tiny_cfg(model.experiment, root, *model.tiny)
        get_method(cfg.runner)(cfg)
    return root
