"""Shared by the tests/unit/deploy/test_*.py files: the deploy files, parsed, and the bundle's
own names and numbers they must agree with."""

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from serve.config import read_properties
from train.core import registry

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_module(path: Path) -> ModuleType:
    """Imports a script by path (docker/ is not a package; a `docker` library may exist)."""
    spec = importlib.util.spec_from_file_location(f"_deploy_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entrypoint() -> ModuleType:
    return load_module(ROOT / "docker" / "entrypoint.py")


def docs(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of a file (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def served_models() -> list[str]:
    """Every registered model (what `make archive` builds and the image holds)."""
    return registry.served_models()


def model_configs() -> dict[str, dict[str, Any]]:
    return {
        m: yaml.safe_load((ROOT / "model_archives" / m / "model-config.yaml").read_text())
        for m in served_models()
    }


def max_batch_size() -> int:
    return max(int(c.get("batchSize", 1)) for c in model_configs().values())


def max_response_timeout() -> int:
    return max(int(c.get("responseTimeout", 120)) for c in model_configs().values())


def properties() -> dict[str, str]:
    return read_properties(ROOT / "config.properties")


def fake_store(path: Path, models: list[str]) -> Path:
    """A model store with an (empty) .mar per model: the entrypoint only lists names."""
    path.mkdir(parents=True, exist_ok=True)
    for m in models:
        (path / f"{m}.mar").write_bytes(b"")
    return path


def container_spec(obj: dict, name: str | None = None) -> dict:
    """The (named, or only) container of a pod template / runtime / Cloud Run service."""
    spec = obj.get("spec", {})
    spec = spec.get("template", {}).get("spec", spec)
    containers = spec["containers"]
    if name is None:
        assert len(containers) == 1, containers
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", [])}
