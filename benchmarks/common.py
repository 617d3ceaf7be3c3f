"""What every benchmark shares: timing, percentiles, the machine description, and a .mar
loaded in-process the way a TorchServe worker loads it."""

import argparse
import json
import os
import platform
import statistics
import threading
import time
import zipfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional

import numpy as np

from serve.config import ROOT

RESULTS = ROOT / "benchmarks" / "results"
EXAMPLES = ROOT / "examples"
POOL = ROOT / "loadtests" / "pool"


def server_arguments(
    parser: argparse.ArgumentParser, models_help: str, models: Optional[list[str]] = None
) -> None:
    """--store, --pool and --models: where a benchmark's server and requests come from."""
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--pool", type=Path, default=POOL)
    parser.add_argument("--models", nargs="*", default=models, help=models_help)


def write_result(result: dict[str, Any], out: Path) -> None:
    """Stamps `finished` and writes the results file that the docs quote."""
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


def slope_per_min(points: list[tuple[float, float]], after_s: float) -> Optional[float]:
    """Least-squares slope per minute (numpy.polyfit) of the (seconds, value) points after
    `after_s`; None with fewer than three."""
    pts = [(t, v) for t, v in points if t >= after_s]
    if len(pts) < 3:
        return None
    t = np.array([p[0] for p in pts]) / 60
    return round(float(np.polyfit(t, np.array([p[1] for p in pts]), 1)[0]), 3)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def timed(
    fn: Callable[[], Any],
    seconds: float,
    min_iters: int = 20,
    warmup: int = 5,
    sync: Callable[[], None] = lambda: None,
) -> list[float]:
    """Runs fn repeatedly for about `seconds` after a warm-up; returns latencies in ms.

    `sync` waits for an accelerator after each call (CUDA runs asynchronously).
    """
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_iters or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
        if len(times) >= 5000:
            break
    return times


def rate(times_ms: list[float], items: int) -> dict[str, float]:
    """Median latency and items/s of a timed() run that handled `items` per call."""
    p50 = statistics.median(times_ms)
    return {"p50_ms": round(p50, 3), "per_s": round(items * 1000 / p50, 1)}


def package_version(package: str) -> Optional[str]:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine(*packages: str) -> dict[str, Any]:
    """CPU, cores, Python, torch, and the versions of `packages` that are installed."""
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
        platform.processor(),
    )
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    info.update({p: package_version(p) for p in packages})
    return info


def memory_gib() -> float:
    """The machine's memory (MemTotal of /proc/meminfo) in GiB."""
    kib = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return round(int(kib) / 2**20, 1)


def example_index() -> dict[str, dict[str, str]]:
    """examples/index.json: each model's real example request (`make examples`)."""
    return json.loads((EXAMPLES / "index.json").read_text())


def example(name: str) -> tuple[bytes, str]:
    """(body, Content-Type) of a model's example request."""
    entry = example_index()[name]
    return (EXAMPLES / entry["file"]).read_bytes(), entry["content_type"]


def load_service(
    mar: Path, workdir: Path, gpu_id: Optional[int] = None, batch_size: int = 32
) -> Any:
    """Unpacks a .mar and loads it as a TorchServe worker does (serve/inprocess.py).

    gpu_id is what TorchServe gives a CUDA worker (benchmarks/gpu.py); None is CPU.
    """
    from serve import inprocess

    return inprocess.load_service(inprocess.unpack(mar, workdir), mar.stem, gpu_id, batch_size)


def handler_of(service: Any) -> tuple[Any, Any]:
    """(handler, context) of a loaded Service."""
    return service._entry_point.__self__, service.context


def mar_config(mar: Path) -> dict[str, Any]:
    """The model-config.yaml packed in a .mar."""
    import yaml

    with zipfile.ZipFile(mar) as z:
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
        return yaml.safe_load(z.read(manifest["model"]["configFile"])) or {}


class Periodic:
    """Calls `tick()` every `interval` seconds on a daemon thread, from `with` to its end (and
    once on entering when `tick_on_enter`): the loop of the benchmarks' samplers."""

    tick_on_enter = False

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def __enter__(self) -> "Periodic":
        if self.tick_on_enter:
            self.tick()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
