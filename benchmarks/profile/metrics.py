"""TorchServe's side of a profile run: /metrics sampled during it, the per-batch times its log
holds, and the CPU time of the server's processes and of the machine."""

import contextlib
import os
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import Periodic
from serve.metrics import per_model, scrape


class Sampler(Periodic):
    """Scrapes /metrics every `interval` s in a thread; gauges hold the last batch's times."""

    def __init__(self, metrics_url: str, name: str, interval: float = 0.25) -> None:
        super().__init__(interval)
        self.url, self.name = metrics_url, name
        self.samples: dict[str, list[float]] = {"HandlerTime": [], "PredictionTime": []}

    def tick(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            values = per_model(scrape(self.url), self.name)
            for key, samples in self.samples.items():
                if key in values:
                    samples.append(values[key])

    def mean(self, key: str) -> Optional[float]:
        values = self.samples[key]
        return round(sum(values) / len(values), 3) if values else None


class LogTail:
    """The HandlerTime and PredictionTime (ms) of every batch that a model's workers reported
    while the tail was open: TorchServe logs each in ts_log.log; /metrics keeps only the last."""

    def __init__(self, log: Path, name: str) -> None:
        self.log, self.name = log, name
        self.values: dict[str, list[float]] = {"HandlerTime": [], "PredictionTime": []}

    def __enter__(self) -> "LogTail":
        self.start = self.log.stat().st_size if self.log.exists() else 0
        return self

    def __exit__(self, *_: Any) -> None:
        if not self.log.exists():
            return
        with open(self.log, "rb") as f:
            f.seek(self.start)
            text = f.read().decode(errors="replace")
        seen = set()
        for line in text.splitlines():
            if "[METRICS]" not in line or f"#ModelName:{self.name}," not in line:
                continue
            metric = line.split("[METRICS]", 1)[1]
            if metric in seen:  # the default log config writes every line twice
                continue
            seen.add(metric)
            key, rest = (
                metric.split(".Milliseconds:", 1) if ".Milliseconds:" in metric else ("", "")
            )
            if key in self.values:
                self.values[key].append(float(rest.split("|", 1)[0]))

    def mean(self, key: str) -> Optional[float]:
        values = self.values[key]
        return round(sum(values) / len(values), 3) if values else None


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of every live process in a process group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of stat: pgrp
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values[:8]) - idle) / tick, sum(values[:8]) / tick
