"""Fixtures shared by both tiers: the data mirror, the data root, and tiny training runs."""

import os
from pathlib import Path

import pytest

from train.core.registry import experiment_config, spec

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


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
    """Trains every graph model for a few epochs and exports it; returns the artifacts root."""
    from hydra.utils import get_method

    root = tmp_path_factory.mktemp("artifacts")
    for name in ("cora_gcn", "cora_gat", "mutag_gcn"):
        cfg = tiny_cfg(name, root, *spec(name).tiny)  # archive.yaml's tiny-run overrides
        get_method(cfg.runner)(cfg)
    return root
