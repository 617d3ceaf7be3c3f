"""`make bench-memory`: the serving container's memory with every model loaded, idle and under load.

Runs the serving image (`make image`) as Cloud Run runs it (PORT=9090, TOKEN_AUTH=off, read-only
root, /tmp on a tmpfs), waits for its health check, then drives every model at once with the
real Locust and the payload pools (`make pools`) for `--seconds` at `--users` users, and reads
the container's memory cgroup from the host every `--every` seconds throughout:
- `usage`: the cgroup's usage, page cache included (what `podman stats` starts from);
- `working_set`: usage less the inactive file cache, the figure Kubernetes and Cloud Run act
  on: reclaimable cache does not count, anonymous memory and tmpfs files do;
- `rss` and `shmem` (the tmpfs: TorchServe unpacks every .mar under /tmp, and Cloud Run's
  filesystem is memory too);
- the kernel's own peak (`memory.max_usage_in_bytes` on cgroup v1, `memory.peak` on v2).

Writes benchmarks/results/container_memory.json with the recommended Cloud Run limit: the peak
working set with `--headroom`, rounded up to a half GiB. `--limit 4g` runs the same load under
that limit instead, to check it (OOM kills and failed requests are recorded; write it to
another file with `--out`). deploy/gcp/cloudrun-service.yaml takes
its memory from that, and tests/unit/deploy/test_gcp.py checks that it still covers it.

Usage: python -m benchmarks.container_memory [--image NAME] [--users 32] [--seconds 120]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import RESULTS, Periodic, machine, write_result
from scripts.containers import engine, run_container, wait_healthy
from serve.config import ROOT
from train.core.registry import served_models

CGROUP = Path("/sys/fs/cgroup")
GIB = 2**30
NAME = "bench-memory"


def cgroup_dir(container_id: str) -> Path:
    """The container's memory cgroup on the host (v1 memory controller or the v2 tree)."""
    roots = [CGROUP / "memory"] if (CGROUP / "memory").is_dir() else [CGROUP]
    for root in roots:
        for path in root.rglob(f"*{container_id}*"):
            if path.is_dir() and ((path / "memory.stat").exists()):
                return path
    raise FileNotFoundError(f"no memory cgroup for {container_id[:12]} under {roots}")


def read(cg: Path) -> dict[str, int]:
    """usage, working_set, rss, shmem and the kernel's peak, in bytes."""
    stat = dict(line.split() for line in (cg / "memory.stat").read_text().splitlines())
    stat = {k: int(v) for k, v in stat.items()}
    if (cg / "memory.usage_in_bytes").exists():  # cgroup v1
        usage = int((cg / "memory.usage_in_bytes").read_text())
        peak = int((cg / "memory.max_usage_in_bytes").read_text())
        inactive, rss, shmem = stat["total_inactive_file"], stat["total_rss"], stat["total_shmem"]
    else:  # cgroup v2
        usage = int((cg / "memory.current").read_text())
        peak = int((cg / "memory.peak").read_text()) if (cg / "memory.peak").exists() else usage
        inactive, rss, shmem = stat["inactive_file"], stat["anon"], stat["shmem"]
    return {
        "usage": usage,
        "working_set": max(0, usage - inactive),
        "rss": rss,
        "shmem": shmem,
        "kernel_peak": peak,
    }


class Sampler(Periodic):
    """Reads the cgroup every `every` seconds on a thread, tagging each sample with a phase."""

    tick_on_enter = True

    def __init__(self, cg: Path, every: float) -> None:
        super().__init__(every)
        self.cg, self.phase = cg, "idle"
        self.samples: list[dict[str, Any]] = []
        self._t0 = time.monotonic()

    def tick(self) -> None:
        row = {"t_s": round(time.monotonic() - self._t0, 1), "phase": self.phase}
        self.samples.append({**row, **read(self.cg)})

    def summary(self, phase: str) -> dict[str, float]:
        rows = [s for s in self.samples if s["phase"] == phase]
        keys = ("usage", "working_set", "rss", "shmem")
        out = {f"max_{k}_mib": round(max(s[k] for s in rows) / 2**20, 1) for k in keys}
        out["last_working_set_mib"] = round(rows[-1]["working_set"] / 2**20, 1)
        out["samples"] = len(rows)
        return out


def locust(base: str, users: int, seconds: int, out: Path) -> dict[str, Any]:
    """Every model's Locust user at once against the container; returns the run's summary."""
    summary = out / "locust-summary.json"
    cmd = [
        str(ROOT / ".venv" / "bin" / "locust"),
        "-f",
        str(ROOT / "loadtests" / "locustfile.py"),
        "--headless",
        "--host",
        base,
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--summary-json",
        str(summary),
        "--only-summary",
    ]
    env = {**os.environ, "LOADTEST_TOKEN": ""}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 300)
    if not summary.exists():
        raise RuntimeError(f"locust wrote no summary (exit {run.returncode}): {run.stderr[-2000:]}")
    return json.loads(summary.read_text())


def recommend(peak_working_set: int, headroom: float) -> str:
    """The Cloud Run memory limit: the peak working set with headroom, up to a half GiB."""
    half_gibs = math.ceil(peak_working_set * headroom / (GIB / 2))
    return f"{half_gibs / 2:g}Gi" if half_gibs % 2 else f"{half_gibs // 2}Gi"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="localhost/torchserve-bundle:latest")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--idle-seconds", type=int, default=20)
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--headroom", type=float, default=1.25)
    parser.add_argument(
        "--limit",
        default="",
        help="run under this memory limit (podman --memory, e.g. 4g): records OOM kills",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "container_memory.json")
    args = parser.parse_args(argv)
    models = served_models()
    base = run_container(
        args.image,
        NAME,
        {"PORT": "9090", "TOKEN_AUTH": "off"},
        9090,
        "--read-only",
        "--tmpfs",
        "/tmp:rw,size=2g,mode=1777",
        *(["--memory", args.limit, "--memory-swap", args.limit] if args.limit else []),
    )
    try:
        ready_s = wait_healthy(NAME, 600)
        cid = json.loads(engine("inspect", NAME).stdout)[0]["Id"]
        cg = cgroup_dir(cid)
        print(f"{NAME} healthy after {ready_s:.0f} s; cgroup {cg}", flush=True)
        with Sampler(cg, args.every) as sampler:
            time.sleep(args.idle_seconds)
            sampler.phase = "load"
            with tempfile.TemporaryDirectory() as tmp:
                load = locust(base, args.users, args.seconds, Path(tmp))
            sampler.phase = "after"
            time.sleep(args.idle_seconds)
        kernel_peak = read(cg)["kernel_peak"]
        state = json.loads(engine("inspect", NAME).stdout)[0]["State"]
    finally:
        engine("rm", "-f", NAME, check=False, timeout=120)
    peak = max(s["working_set"] for s in sampler.samples)
    record = {
        "command": ("python -m benchmarks.container_memory " + " ".join(argv or sys.argv[1:])),
        "machine": machine("torch"),
        "image": args.image,
        "image_size_gb": round(
            json.loads(engine("image", "inspect", args.image).stdout)[0]["Size"] / 1e9, 2
        ),
        "models": models,
        "users": args.users,
        "load_seconds": args.seconds,
        "memory_limit": args.limit or None,
        "oom_killed": bool(state.get("OOMKilled")),
        "running_at_the_end": bool(state.get("Running")),
        "healthy_after_s": round(ready_s, 1),
        "requests": {
            m: {k: v for k, v in row.items() if k in ("requests", "failures", "rps", "p50_ms")}
            for m, row in load["endpoints"].items()
        },
        "idle": sampler.summary("idle"),
        "load": sampler.summary("load"),
        "after": sampler.summary("after"),
        "kernel_peak_usage_mib": round(kernel_peak / 2**20, 1),
        "peak_working_set_mib": round(peak / 2**20, 1),
        "headroom": args.headroom,
        "recommended_cloud_run_memory": recommend(peak, args.headroom),
        "samples": sampler.samples,
    }
    write_result(record, args.out)
    brief = {k: v for k, v in record.items() if k not in ("samples", "machine", "requests")}
    print(json.dumps(brief, indent=1))


if __name__ == "__main__":
    main()
