"""`make image-train-test`: runs the training image as a Vertex AI custom job would, on a short
real job, and checks what it exported.

Usage: python scripts/image_train_test.py --experiment NAME [--image NAME]
       [--overrides key=value ...]        (make image-train-test: TRAIN_TEST_EXPERIMENT)

The container gets the data mirror read-only at /mirror (DATA_MIRROR, as DATA_URI would after
its GCS pull), writes its artifacts to a mounted folder (ARTIFACTS_DIR), runs as its own
non-root user with no network, and must exit 0. The exported model.pt must then load here, and
when this checkout has trained the same experiment (artifacts/<name>/metrics.json), the
container's test metric must equal it (training is seeded and deterministic).
Needs podman (docker/podman.sh) or CONTAINER_ENGINE=docker, and DATA_MIRROR.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
ENGINE = shlex.split(os.environ.get("CONTAINER_ENGINE", str(ROOT / "docker" / "podman.sh")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="localhost/torchserve-bundle-train:latest")
    parser.add_argument("--experiment", required=True, help="a registered model: a real job")
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides")
    args = parser.parse_args(argv)
    mirror = os.environ.get("DATA_MIRROR")
    if not mirror:
        sys.exit("DATA_MIRROR is not set (e.g. export DATA_MIRROR=../shared/data)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "artifacts"
        out.mkdir()
        out.chmod(0o777)  # the image's user (uid 1000) writes here
        cmd = [
            *ENGINE,
            "run",
            "--rm",
            "--network",
            "none",
            "-e",
            f"EXPERIMENT={args.experiment}",
            "-e",
            "DATA_MIRROR=/mirror",
            "-e",
            "ARTIFACTS_DIR=/out",
            "-v",
            f"{Path(mirror).resolve()}:/mirror:ro",
            "-v",
            f"{out}:/out",
            args.image,
            *args.overrides,
        ]
        print("$", shlex.join(cmd), flush=True)
        started = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
        seconds = time.perf_counter() - started
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        if run.returncode != 0:
            print(f"FAIL: the training container exited {run.returncode}")
            return 1
        art = out / args.experiment
        metrics = json.loads((art / "metrics.json").read_text())
        meta = json.loads((art / "meta.json").read_text())
        model = torch.jit.load(str(art / "model.pt"))
        owner = {p.stat().st_uid for p in art.iterdir()}
        print(f"trained {args.experiment} in the container in {seconds:.0f} s: {metrics}")
        print(f"model.pt loads here ({type(model).__name__}); meta keys {sorted(meta)}")
        local = ROOT / "artifacts" / args.experiment / "metrics.json"
        if local.exists() and not args.overrides:
            host = json.loads(local.read_text())
            same = host.get("test_acc") == metrics.get("test_acc")
            print(f"host test_acc {host.get('test_acc')}, container {metrics.get('test_acc')}")
            if not same:
                print("FAIL: the container trained a different model than this checkout")
                return 1
        if owner != {1000}:
            print(f"FAIL: artifacts owned by uid {owner}, expected the image's user 1000")
            return 1
        print("ok: training image ran a real job as a non-root user with no network")
    return 0


if __name__ == "__main__":
    sys.exit(main())
