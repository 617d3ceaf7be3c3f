"""build_mar: packs artifacts/<name>/ and model_archives/<name>/ into <name>.mar.

What goes in comes from the model's archive.yaml (train.core.registry): the handler and its
helper modules, meta.json and metrics.json of the export, the spec's artifact files, and the
drift reference profile when the export wrote one. Its version (`model_version`) names the git
commit it was built from and the trained weights it packs.
"""

import hashlib
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


def git_state(root: Path = ROOT) -> str:
    """HEAD's short commit, `-dirty` when tracked files differ from it; `nogit` outside git.

    dvc.lock does not count: every training run records itself there (train/store.py).
    """
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=7", "HEAD"], cwd=root, capture_output=True, text=True
        )
        if head.returncode:
            return "nogit"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock"],
            cwd=root, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
    except FileNotFoundError:  # no git installed
        return "nogit"
    return head.stdout.strip() + ("-dirty" if dirty else "")


def model_version(art: Path, root: Path = ROOT) -> str:
    """A .mar's version: `<git state>-<md5 of model.pt, 8 hex>`, e.g. `48d31c9-3f2a9c1e`.

    The md5 is the one DVC keeps for model.pt in the artifact's cache entry (dvc.yaml's train
    stage), so the served version names both the code and the exact weights. TorchServe takes
    any string as a version (the online loop serves `online-<k>`); this one is URL-safe.
    """
    digest = hashlib.md5()
    with open(Path(art) / "model.pt", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{git_state(root)}-{digest.hexdigest()[:8]}"


def build_mar(
    name: str,
    artifacts: Path,
    export_path: Path,
    version: Optional[str] = None,
    *,
    model: Optional[ModelSpec] = None,
    config_file: Optional[Path] = None,
) -> Path:
    """Runs torch-model-archiver for artifacts/<name>/; returns the .mar path.

    `model` packs `name` with another registered model's handler and files (a benchmark's
    variant of it); `config_file` replaces that model's model-config.yaml. `version` defaults
    to `model_version` of the artifact.
    """
    model = model or spec(name)
    art = Path(artifacts) / name
    missing = [f for f in REQUIRED if not (art / f).exists()]
    if missing:
        raise FileNotFoundError(f"{art} lacks {missing}: train it first (make train MODELS={name})")
    version = version or model_version(art)
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
