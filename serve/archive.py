"""build_mar: packs artifacts/<name>/ and model_archives/<name>/ into <name>.mar.

What goes in comes from the model's archive.yaml (train.core.registry): the handler and its
helper modules, meta.json and metrics.json of the export, the spec's artifact files, and the
drift reference profile when the export wrote one.
"""

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from serve.config import ROOT
from train.core.registry import ModelSpec, spec

REQUIRED = ("model.pt", "meta.json")
# Packed when the export wrote them: the drift reference profile (monitor/reference.py), which
# the monitor reads from the .mar. An artifact exported before it existed still packs.
OPTIONAL = ("reference.json", "reference.npz")


def build_mar(
    name: str,
    artifacts: Path,
    export_path: Path,
    version: str = "1.0",
    *,
    model: Optional[ModelSpec] = None,
    config_file: Optional[Path] = None,
) -> Path:
    """Runs torch-model-archiver for artifacts/<name>/; returns the .mar path.

    `model` packs `name` with another registered model's handler and files (a benchmark's
    variant of it); `config_file` replaces that model's model-config.yaml.
    """
    model = model or spec(name)
    art = Path(artifacts) / name
    missing = [f for f in REQUIRED if not (art / f).exists()]
    if missing:
        raise FileNotFoundError(f"{art} lacks {missing}: train it first (make train MODELS={name})")
    extra = [str(ROOT / f) for f in model.extra_files]
    extra += [str(art / "meta.json"), str(art / "metrics.json")]
    extra += [str(art / f) for f in model.artifact_files]
    extra += [str(art / f) for f in OPTIONAL if (art / f).exists()]
    export_path.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "model_archiver.model_packaging",
        "--model-name", name,
        "--version", version,
        "--serialized-file", str(art / "model.pt"),
        "--handler", str(ROOT / model.handler),
        "--extra-files", ",".join(extra),
        "--config-file", str(config_file or model.model_config),
        "--export-path", str(export_path),
        "--force",
    ]  # fmt: skip
    # A bare environment: the archive must not depend on who builds it. The archiver stages
    # files in $TMPDIR/<name> (tempfile.gettempdir()): a private TMPDIR keeps two builds of
    # one model (parallel sessions, a test beside `make archive`) from deleting each other's.
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="mar-") as tmp:
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": tmp}
        subprocess.run(cmd, check=True, env=env)
    return export_path / f"{name}.mar"
