"""Packs artifacts/<name>/ and model_archives/<name>/ into model_store/<name>.mar.

Usage: python scripts/build_mar.py NAME [--artifacts DIR] [--export-path DIR] [--version V]
"""

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def build(name: str, artifacts: Path, export_path: Path, version: str = "1.0") -> Path:
    """Runs torch-model-archiver for one model; returns the .mar path."""
    spec = yaml.safe_load((ROOT / "model_archives" / name / "archive.yaml").read_text())
    art = artifacts / name
    missing = [f for f in ("model.pt", "meta.json") if not (art / f).exists()]
    if missing:
        sys.exit(f"{art} lacks {missing}: train it first (make train MODELS={name})")
    extra = [str(ROOT / f) for f in spec.get("extra_files", [])]
    extra += [str(art / "meta.json"), str(art / "metrics.json")]
    extra += [str(art / f) for f in spec.get("artifact_files", [])]
    export_path.mkdir(parents=True, exist_ok=True)
    cmd = [
        "torch-model-archiver",
        "--model-name",
        name,
        "--version",
        version,
        "--serialized-file",
        str(art / "model.pt"),
        "--handler",
        str(ROOT / spec["handler"]),
        "--extra-files",
        ",".join(extra),
        "--config-file",
        str(ROOT / "model_archives" / name / "model-config.yaml"),
        "--export-path",
        str(export_path),
        "--force",
    ]
    bin_dir = Path(sys.executable).parent
    subprocess.run(cmd, check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    return export_path / f"{name}.mar"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--export-path", type=Path, default=ROOT / "model_store")
    parser.add_argument("--version", default="1.0")
    args = parser.parse_args()
    for name in args.names:
        print(build(name, args.artifacts, args.export_path, args.version))


if __name__ == "__main__":
    main()
