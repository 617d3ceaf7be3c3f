"""The processes of a running torchserve (frontend JVM and each model's workers), their RSS
sampled over time with psutil, and a worker killed on purpose (benchmarks.faults, make soak)."""

import contextlib
import os
import signal
import time
from typing import Any, Optional

import psutil

from benchmarks.common import Periodic
from serve.server import Server

MIB = 2**20


def worker_pids(server: Server, model: str) -> list[int]:
    """The pids of a model's workers, as the management API describes them (`workers[].pid`)."""
    return [int(w["pid"]) for w in server.client(timeout_s=10).describe(model)["workers"]]


def ready_pids(server: Server, model: str) -> list[int]:
    """The pids of the model's workers that are READY now (an empty list while none is)."""
    workers = server.client(timeout_s=10).describe(model)["workers"]
    return [int(w["pid"]) for w in workers if w.get("status") == "READY"]


def frontend(server: Server) -> psutil.Process:
    """The Java frontend: the child of the launcher that server.start() runs."""
    assert server.proc is not None, "only a server this process started"
    launcher = psutil.Process(server.proc.pid)
    java = [p for p in launcher.children(recursive=True) if "java" in p.name().lower()]
    return java[0] if java else launcher


def processes(server: Server, models: list[str]) -> dict[str, psutil.Process]:
    """{label: process}: "frontend", and "<model>/<i>" for each worker of each model."""
    out = {"frontend": frontend(server)}
    for model in models:
        for i, pid in enumerate(sorted(worker_pids(server, model))):
            with contextlib.suppress(psutil.NoSuchProcess):
                out[f"{model}/{i}"] = psutil.Process(pid)
    return out


def sigkill(pid: int) -> None:
    """SIGKILL, as the kernel's OOM killer or a crashed native library would end a worker."""
    os.kill(pid, signal.SIGKILL)


class RssSampler(Periodic):
    """Samples the RSS (MiB) of a fixed set of processes every `interval` s in a thread.

    Workers that TorchServe replaces are followed by label when `refresh` is given (a callable
    returning the current {label: process}); a vanished process just has no sample that tick.
    """

    tick_on_enter = True

    def __init__(
        self,
        procs: dict[str, psutil.Process],
        interval: float = 1.0,
        refresh: Optional[Any] = None,
    ) -> None:
        super().__init__(interval)
        self.procs, self.refresh = dict(procs), refresh
        self.samples: dict[str, list[tuple[float, float]]] = {k: [] for k in procs}
        self.t0 = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic() - self.t0
        for label, proc in list(self.procs.items()):
            try:
                rss = proc.memory_info().rss / MIB
            except psutil.Error:
                continue
            self.samples.setdefault(label, []).append((now, rss))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.refresh is not None:
                with contextlib.suppress(Exception):
                    self.procs = self.refresh()
            self.tick()

    def __enter__(self) -> "RssSampler":
        self.t0 = time.monotonic()
        super().__enter__()
        return self

    def peak(self, label: str) -> Optional[float]:
        values = [rss for _, rss in self.samples.get(label, [])]
        return max(values) if values else None
