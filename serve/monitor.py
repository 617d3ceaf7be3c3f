"""Starting and stopping the drift monitor (`python -m monitor`) beside TorchServe.

`make serve` starts it after TorchServe is READY, with the same store and the payload folder
the workers write to; `make stop` stops it by its pid file. Tests start one on a free port.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from serve.server import terminate

PID_FILE = "monitor.pid"


@dataclass
class MonitorProcess:
    """A running monitor and where its gauges are."""

    url: str  # http://127.0.0.1:<port>/metrics
    proc: subprocess.Popen

    def metrics(self, timeout: float = 5) -> str:
        with urllib.request.urlopen(self.url, timeout=timeout) as r:
            return r.read().decode()

    def stop(self) -> Optional[int]:
        return terminate(self.proc, timeout=30)


def start_monitor(
    store: Path,
    payload_dir: Path,
    log_dir: Path,
    port: int,
    *options: str,
    pid_file: Optional[Path] = None,
    timeout: float = 60,
) -> MonitorProcess:
    """Starts `python -m monitor` in its own session and waits until /metrics answers."""
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "monitor", "--store", str(store), "--payload-dir"]
    cmd += [str(payload_dir), "--port", str(port), *options]
    root = Path(__file__).resolve().parent.parent
    with open(log_dir / "monitor.log", "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    mon = MonitorProcess(f"http://127.0.0.1:{port}/metrics", proc)
    if pid_file is not None:
        pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the monitor exited with {proc.returncode}: see {log_dir}")
        try:
            mon.metrics(timeout=2)
            return mon
        except OSError:
            if time.monotonic() > deadline:
                mon.stop()
                raise TimeoutError(f"the monitor did not answer on {mon.url}") from None
            time.sleep(0.3)


def stop_by_pid_file(pid_file: Path) -> bool:
    """Stops the monitor `make serve` started; False when none was running."""
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 15  # gone, so that a new one can bind the port
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    return True
