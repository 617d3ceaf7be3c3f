"""Locust for the profile: one headless run of loadtests/locustfile.py, and its CSV and summary."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from serve.config import ROOT

LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"


def read_stats_csv(path: Path, name: str) -> dict[str, Any]:
    """One endpoint's row of Locust's `<prefix>_stats.csv` (requests, rps, percentiles in ms)."""
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["Name"] == name:
                num = lambda key, row=row: _number(row[key])  # noqa: E731
                return {
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "rps": num("Requests/s"),
                    "mean_ms": num("Average Response Time"),
                    "p50_ms": num("50%"),
                    "p95_ms": num("95%"),
                    "p99_ms": num("99%"),
                    "max_ms": num("Max Response Time"),
                }
    raise KeyError(f"{name} not in {path}")


def _number(text: str) -> Optional[float]:
    return float(text) if text not in ("", "N/A") else None


def read_run(prefix: Path, name: str) -> dict[str, Any]:
    """A Locust run's figures for one model: its CSV row plus the locustfile's summary JSON
    (exact percentiles, mean X-Batch-Size, load generator CPU)."""
    row = read_stats_csv(Path(f"{prefix}_stats.csv"), name)
    summary = json.loads(Path(f"{prefix}_summary.json").read_text())
    endpoint = summary["endpoints"][name]
    row["exact"] = endpoint["exact"]
    row["batch_size_mean"] = endpoint["batch_size_mean"]
    row["loadgen_cores"] = summary["loadgen"]["cores"]
    row["wall_s"] = summary["loadgen"]["wall_s"]
    return row


def run_locust(
    host: str, tok: str, name: str, users: int, seconds: float, pool: Path, prefix: Path
) -> subprocess.CompletedProcess:
    """One headless closed-loop Locust run of one user class; stats exclude the ramp-up."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        name,
        "--headless",
        "--only-summary",
        "--host",
        host,
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{max(1, round(seconds))}s",
        "--reset-stats",
        "--stop-timeout",
        "10",
        "--pool",
        str(pool),
        "--csv",
        str(prefix),
        "--summary-json",
        f"{prefix}_summary.json",
        "--max-fail-ratio",
        "1",
        "--loglevel",
        "WARNING",
    ]
    env = {**os.environ, "LOADTEST_TOKEN": tok}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)
