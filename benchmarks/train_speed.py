"""`make bench-train`: the training speed-ups of docs/training.md, measured side by side.

- **DDP.** `python -m train experiment=mutag_gcn` with `trainer=default` and `trainer=ddp`
  (two CPU processes, gloo), wall time of the whole command, `--rounds` rounds alternated. The
  artifacts go to a scratch folder.
- **Decoding workers.** The flowers photos of the train split decoded as training decodes them
  (train.flowers.data.ImageSet.subset) with `data.workers` 0, 1 and 2, wall time.

Run it on a quiet machine. Writes benchmarks/results/train_speed.json.
Usage: python -m benchmarks.train_speed [--rounds 2] [--skip-ddp] [--skip-workers]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import RESULTS, machine, write_result
from serve.config import ROOT


def ddp(rounds: int) -> dict[str, Any]:
    """Wall seconds of mutag_gcn's whole training command per trainer, alternated."""
    times: dict[str, list[float]] = {"default": [], "ddp": []}
    metrics: dict[str, Any] = {}
    for _ in range(rounds):
        for trainer in times:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [
                    sys.executable, "-m", "train", "experiment=mutag_gcn", f"trainer={trainer}",
                    "logger=none", "trainer.enable_progress_bar=false", f"paths.artifacts={tmp}",
                    f"hydra.run.dir={tmp}/hydra",
                ]  # fmt: skip
                began = time.perf_counter()
                subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, env=os.environ)
                times[trainer].append(round(time.perf_counter() - began, 1))
                m = json.loads((Path(tmp) / "metrics.json").read_text())
                metrics[trainer] = {k: m[k] for k in ("cv_acc_mean", "test_acc", "world_size")}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "command": "python -m train experiment=mutag_gcn trainer=<default|ddp>",
        "seconds": times,
        "median_s": med,
        "ddp_speedup": round(med["default"] / med["ddp"], 2),
        "metrics": metrics,
    }


def workers(rounds: int) -> dict[str, Any]:
    """Wall seconds to decode the flowers train split with 0, 1 and 2 DataLoader workers."""
    from train.core.registry import experiment_config
    from train.flowers.data import ImageSet

    data = experiment_config("flowers_cnn").data
    times: dict[str, list[float]] = {}
    photos = 0
    for path in ImageSet(data, 42).paths:  # the files in the page cache: decoding is timed
        path.read_bytes()
    for _ in range(rounds):
        for n in (0, 1, 2):
            data.workers = n
            images = ImageSet(data, 42)
            began = time.perf_counter()
            x, _ = images.subset("train")
            times.setdefault(str(n), []).append(round(time.perf_counter() - began, 2))
            photos = len(x)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "photos": photos,
        "seconds": times,
        "median_s": med,
        "speedup_2_workers": round(med["0"] / med["2"], 2),
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-ddp", action="store_true")
    parser.add_argument("--skip-workers", action="store_true")
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    result: dict[str, Any] = {
        "command": ("python -m benchmarks.train_speed " + " ".join(given)).strip(),
        "machine": machine("torch", "lightning"),
    }
    if not args.skip_ddp:
        result["ddp"] = ddp(args.rounds)
        print(result["ddp"], flush=True)
    if not args.skip_workers:
        result["workers"] = workers(args.rounds)
        print(result["workers"], flush=True)
    write_result(result, RESULTS / "train_speed.json")


if __name__ == "__main__":
    main()
