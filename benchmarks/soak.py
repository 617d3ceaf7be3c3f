"""`make soak`: a long run at about 80% of saturation on a mixed workload over every model
(issue 13, section 4), with the RSS of the frontend and of every worker sampled over time.

Locust (loadtests/locustfile.py, the file `make loadtest` runs) sends every model's real payload
pool in constant-rate mode (`--rate`, equal requests per model), and loadtests/request_log.py
writes every request's end time and latency. The rate is `--load` times the mixed saturation:
the harmonic mean of each model's saturation throughput in benchmarks/results/profile.json
(`make profile`, committed setting, real pool), because an equal mix spends 1/s_m seconds of
server per request of model m; `--rate` sets it directly. psutil samples RSS every
`--interval` s. After `--warmup` s, a least-squares line (numpy.polyfit) per process gives its
RSS slope in MiB/min, and the per-minute p99s show whether latency stays flat.

Writes benchmarks/results/soak.json and benchmarks/results/plots/soak.png; Locust's CSV and the
request log go to benchmarks/runs/soak/ (not committed).
Usage: python -m benchmarks.soak [--seconds 600] [--warmup 120] [--load 0.8 | --rate R]
       [--models a b] [--users-per-model 4] [--interval 5]
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from benchmarks import jvm
from benchmarks.common import (
    RESULTS,
    machine,
    memory_gib,
    server_arguments,
    slope_per_min,
    write_result,
)
from benchmarks.procs import RssSampler, frontend, processes
from serve.config import CONFIG, ROOT
from serve.server import Server, model_names, start

RUNS = ROOT / "benchmarks" / "runs" / "soak"
PROFILE = RESULTS / "profile.json"
OUT = RESULTS / "soak.json"
PLOT = RESULTS / "plots" / "soak.png"
COMMAND = "make soak"
LOCUSTFILES = f"{ROOT / 'loadtests' / 'locustfile.py'},{ROOT / 'loadtests' / 'request_log.py'}"


def mixed_saturation(models: list[str], profile: Path = PROFILE) -> dict[str, Any]:
    """Requests/s an equal mix of `models` saturates at, from `make profile`'s best rps."""
    runs = json.loads(profile.read_text())["runs"]
    best: dict[str, float] = {}
    for r in runs:
        if r["setting"] == "default" and r["payloads"] == "pool" and r["model"] in models:
            best[r["model"]] = max(best.get(r["model"], 0.0), r["rps"])
    if not best:
        raise KeyError(f"no saturation in {profile} for {models}: run make profile, or --rate")
    # A model the profile did not measure (a newer one) costs what the measured ones cost on
    # average: the harmonic mean over those that have a figure.
    mixed = len(best) / sum(1 / rps for rps in best.values())
    return {
        "per_model_rps": best,
        "not_profiled": sorted(set(models) - set(best)),
        "mixed_rps": round(mixed, 1),
        "source": str(profile.name),
    }


def locust(
    server: Server,
    models: list[str],
    pool: Path,
    out: Path,
    seconds: float,
    rate: float,
    users: int,
) -> subprocess.CompletedProcess:
    """One headless constant-rate Locust run of the models' user classes."""
    cmd = [
        sys.executable, "-m", "locust", "-f", LOCUSTFILES, *models,
        "--headless", "--only-summary", "--host", server.inference,
        "-u", str(users), "-r", str(users), "-t", f"{max(1, round(seconds))}s",
        "--rate", str(rate), "--pool", str(pool), "--stop-timeout", "10",
        "--csv", str(out / "soak"), "--summary-json", str(out / "summary.json"),
        "--request-log", str(out / "requests.csv"), "--max-fail-ratio", "0",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "LOADTEST_TOKEN": server.token() or ""}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 180)


def latency_bins(requests: Path, t0: float, bin_s: float) -> list[dict[str, Any]]:
    """Per bin of `bin_s` seconds: requests, failures, p50 and p99 (ms) of the successes."""
    rows: dict[int, list[tuple[float, int]]] = {}
    with open(requests, newline="") as f:
        for r in csv.DictReader(f):
            k = int((float(r["end_s"]) - t0) // bin_s)
            rows.setdefault(k, []).append((float(r["ms"]), int(r["failed"])))
    out = []
    for k in sorted(rows):
        ok = np.array([ms for ms, failed in rows[k] if not failed])
        out.append(
            {
                "start_s": k * bin_s,
                "requests": len(rows[k]),
                "failures": sum(failed for _, failed in rows[k]),
                "p50_ms": round(float(np.percentile(ok, 50)), 1) if ok.size else None,
                "p99_ms": round(float(np.percentile(ok, 99)), 1) if ok.size else None,
            }
        )
    return out


def plot(result: dict[str, Any], rss: dict[str, list[tuple[float, float]]], path: Path) -> None:
    """RSS of every process (top) and p50/p99 per bin (bottom) over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for label, samples in sorted(rss.items()):
        if samples:
            top.plot([t / 60 for t, _ in samples], [m for _, m in samples], label=label, lw=1)
    top.axvline(result["warmup_s"] / 60, color="grey", ls="--", lw=0.8)
    top.set_ylabel("RSS (MiB)")
    top.set_title(
        f"{result['command']}: {result['rate_rps']} requests/s, {result['seconds']:.0f} s"
    )
    top.legend(fontsize=6, ncol=3)
    bins = result["latency_bins"]
    mids = [(b["start_s"] + result["bin_s"] / 2) / 60 for b in bins]
    for key in ("p50_ms", "p99_ms"):
        bottom.plot(mids, [b[key] for b in bins], marker="o", label=key.replace("_ms", ""))
    bottom.set_ylabel(f"latency per {result['bin_s']:.0f} s (ms)")
    bottom.set_xlabel("minutes")
    bottom.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_soak(
    server: Server,
    models: list[str],
    pool: Path,
    runs: Path,
    seconds: float,
    rate: float,
    warmup: float,
    users_per_model: int = 4,
    interval: float = 5.0,
    plot_path: Optional[Path] = None,
    gc_log: Optional[Path] = None,
) -> dict[str, Any]:
    """The soak against a running server; returns the figures (and draws the plot).

    With `gc_log` (a server started from jvm.diagnostic_config), the JVM's native memory is
    read at the end of the warm-up and at the end, and its heap after each GC from the log.
    """
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    java = frontend(server)
    nmt: dict[str, Any] = {}
    # jcmd attaches with SIGQUIT, which only a JVM survives: only the diagnostic server's.
    read = gc_log is not None and "java" in java.name().lower()
    warm = threading.Timer(warmup, lambda: nmt.update(warm=jvm.native_memory(java.pid)))
    if read:
        warm.start()
    with RssSampler(processes(server, models), interval, lambda: processes(server, models)) as rss:
        done = locust(server, models, pool, runs, seconds, rate, users_per_model * len(models))
    warm.cancel()
    nmt_end = jvm.native_memory(java.pid) if read else None
    summary = json.loads((runs / "summary.json").read_text())
    if done.returncode not in (0, 1):
        raise RuntimeError(f"locust exited with {done.returncode}: {done.stderr[-2000:]}")
    bin_s = 60.0 if seconds >= 300 else max(5.0, seconds / 6)
    bins = latency_bins(runs / "requests.csv", t0, bin_s)
    later = [b["p99_ms"] for b in bins if b["start_s"] >= warmup and b["p99_ms"] is not None]
    endpoints = summary["endpoints"]
    result: dict[str, Any] = {
        "command": COMMAND,
        "models": models,
        "seconds": seconds,
        "warmup_s": warmup,
        "rate_rps": rate,
        "users": users_per_model * len(models),
        "achieved_rps": round(sum(e["rps"] for e in endpoints.values()), 1),
        # Locust's pacing does not make up late requests: a rate not held means the server
        # saturated below the target (the derived saturation was too high for this mix).
        "rate_held": sum(e["rps"] for e in endpoints.values()) >= 0.95 * rate,
        "requests": sum(e["requests"] for e in endpoints.values()),
        "errors": sum(e["failures"] for e in endpoints.values()),
        "per_model": {
            name: {k: e[k] for k in ("requests", "failures", "rps", "p50_ms", "p99_ms")}
            for name, e in endpoints.items()
        },
        "interval_s": interval,
        "rss_slope_mib_per_min": {
            label: slope_per_min(samples, warmup) for label, samples in rss.samples.items()
        },
        "rss_first_last_mib": {
            label: [round(s[0][1], 1), round(s[-1][1], 1)] for label, s in rss.samples.items() if s
        },
        "bin_s": bin_s,
        "latency_bins": bins,
        "p99_after_warmup_min_max_ms": [min(later), max(later)] if later else None,
        "locust_exit_code": done.returncode,
    }
    if gc_log is not None:
        result["jvm"] = jvm.summary(
            gc_log, t0 + warmup - java.create_time(), nmt.get("warm"), nmt_end,
            (time.time() - t0 - warmup) / 60,
        )  # fmt: skip
    if plot_path is not None:
        plot(result, rss.samples, plot_path)
    return result


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    server_arguments(parser, "default: every .mar of the store")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--warmup", type=float, default=120.0, help="left out of the slopes")
    parser.add_argument("--load", type=float, default=0.8, help="share of mixed saturation")
    parser.add_argument("--rate", type=float, help="requests/s for all models (skips --load)")
    parser.add_argument("--users-per-model", type=int, default=4)
    parser.add_argument("--interval", type=float, default=5.0, help="RSS sampling, seconds")
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args(argv)
    models = args.models or model_names(args.store)
    saturation = None if args.rate else mixed_saturation(models)
    rate = args.rate or round(args.load * saturation["mixed_rps"], 1)  # type: ignore[index]
    args.runs.mkdir(parents=True, exist_ok=True)
    gc_log = (args.runs / "gc.log").resolve()
    gc_log.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = jvm.diagnostic_config(CONFIG, Path(tmp) / "soak.properties", gc_log)
        server = start(args.store, Path(tmp), model_names(args.store), config=config)
        try:
            result = run_soak(
                server, models, args.pool, args.runs, args.seconds, rate, args.warmup,
                args.users_per_model, args.interval, args.plot, gc_log,
            )  # fmt: skip
        finally:
            server.stop()
    result.update(
        argv=" ".join(["python -m benchmarks.soak", *sys.argv[1:]]),
        machine={**machine("torchserve", "locust", "psutil"), "memory_gib": memory_gib()},
        saturation=saturation,
        load=None if args.rate else args.load,
    )
    print(json.dumps({k: result[k] for k in ("rate_rps", "achieved_rps", "requests", "errors")}))
    write_result(result, args.out)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
