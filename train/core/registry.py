"""The one registry of served models: every `model_archives/<name>/archive.yaml` is a model.

The folder name is the model name, the `.mar`, the `/predictions/<name>` URL and the Locust
user class. Examples, pools, `make serve`, Locust, benchmarks and the image test ask this module;
none of them keeps its own list or its own glob. Hydra composition of the training configs
happens here too, in one place.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[2]
ARCHIVES = ROOT / "model_archives"
CONFIGS = ROOT / "configs"


@dataclass(frozen=True)
class ModelSpec:
    """One served model, as its `archive.yaml` describes how to train, pack and show it."""

    name: str
    experiment: str
    handler: str
    extra_files: tuple[str, ...] = ()
    artifact_files: tuple[str, ...] = ()
    example: Optional[str] = None  # hook (data cfg) -> (suffix, content type, body): make examples
    pool: Optional[str] = None  # hook (data cfg, size, rng) -> [Payload]: make pools
    shifts: Optional[str] = None  # hook (data cfg, size, rng) -> ShiftSet: make robustness
    requires: tuple[str, ...] = ()  # models whose artifacts this one's training reads
    tiny: tuple[str, ...] = ()  # Hydra overrides of the e2e tests' tiny run
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def folder(self) -> Path:
        """model_archives/<name>/."""
        return ARCHIVES / self.name

    @property
    def model_config(self) -> Path:
        """The TorchServe model-config.yaml packed into the .mar."""
        return self.folder / "model-config.yaml"


def served_models(archives: Path = ARCHIVES) -> list[str]:
    """Names of every served model, sorted."""
    return sorted(p.parent.name for p in archives.glob("*/archive.yaml"))


def spec(name: str, archives: Path = ARCHIVES) -> ModelSpec:
    """The archive.yaml of one model; KeyError names the registered ones when it is unknown."""
    path = archives / name / "archive.yaml"
    if not path.is_file():
        raise KeyError(f"{name!r} is not a served model (known: {served_models(archives)})")
    raw = yaml.safe_load(path.read_text())
    return ModelSpec(
        name=name,
        experiment=raw["experiment"],
        handler=raw["handler"],
        extra_files=tuple(raw.get("extra_files", [])),
        artifact_files=tuple(raw.get("artifact_files", [])),
        example=raw.get("example"),
        pool=raw.get("pool"),
        shifts=raw.get("shifts"),
        requires=tuple(raw.get("requires", [])),
        tiny=tuple(raw.get("tiny", [])),
        raw=raw,
    )


def specs(archives: Path = ARCHIVES) -> list[ModelSpec]:
    """Every served model's spec, sorted by name."""
    return [spec(n, archives) for n in served_models(archives)]


def compose_config(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """Composes configs/<config_name>.yaml with Hydra overrides (no Hydra run, no chdir)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def experiment_config(experiment: str, *overrides: str) -> DictConfig:
    """The full training config of one experiment (`experiment=<name>`) with overrides."""
    return compose_config([f"experiment={experiment}", *overrides])
