"""A real Prometheus beside TorchServe: `make monitor`, and the tests' own on free ports.

The scrape config and the alert rules live once, in deploy/prometheus/; a Prometheus for a
server on other ports gets a copy of that config with only its targets and intervals replaced.
Prometheus and promtool come from Debian's package (scripts/ensure_prometheus.sh).
"""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from serve.client import http
from serve.config import ROOT, free_port
from serve.server import terminate

PROM_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
RULES = PROM_DIR / "alerts.yml"


def host_port(url: str) -> str:
    """ "http://127.0.0.1:8082" -> "127.0.0.1:8082" (a scrape target)."""
    return urllib.parse.urlsplit(url).netloc or url


def render(targets: dict[str, str], interval: Optional[str] = None) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with each job's target replaced ({job: URL}), the rule
    file by its absolute path, and both intervals set to `interval` when given."""
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["rule_files"] = [str(PROM_DIR / f) for f in cfg.get("rule_files", [])]
    if interval:
        cfg["global"].update(scrape_interval=interval, evaluation_interval=interval)
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    unknown = set(targets) - set(jobs)
    if unknown:
        raise KeyError(f"no scrape job {sorted(unknown)} in {CONFIG}")
    for name, url in targets.items():
        jobs[name]["static_configs"] = [{"targets": [host_port(url)]}]
    return cfg


def scrape_targets(cfg: Optional[dict[str, Any]] = None) -> list[str]:
    """ "job=host:port" of every scrape job of a config (deploy/prometheus/'s by default)."""
    cfg = cfg or yaml.safe_load(CONFIG.read_text())
    return [
        f"{job['job_name']}={t}"
        for job in cfg["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    ]


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    url: str
    proc: Optional[subprocess.Popen]
    workdir: Path

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = http(f"{self.url}/api/v1/{path}{query}", timeout=10)
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise RuntimeError(f"/api/v1/{path} -> {status}: {body[:300]!r}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        return self.api("query", query=expr)["result"]

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts: [{"labels": {...}, "state": "pending"|"firing"}, ...]."""
        return self.api("alerts")["alerts"]

    def rules(self) -> list[dict[str, Any]]:
        """Every rule with its health, last error and state."""
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout=30)


def binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise FileNotFoundError("prometheus is not installed: run scripts/ensure_prometheus.sh")
    return found


def start(
    workdir: Path,
    targets: Optional[dict[str, str]] = None,
    *,
    port: Optional[int] = None,
    interval: Optional[str] = None,
    timeout: float = 60,
) -> Prometheus:
    """Starts Prometheus on 127.0.0.1 (a free port unless given) and waits until it is ready.

    With `targets`, it scrapes those ({job: URL}) with a rendered copy of the config in
    `workdir`; without, deploy/prometheus/prometheus.yml as it is (`make serve`'s ports). Its
    data lives in `workdir`. It runs in its own session and outlives the caller until stopped.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config = CONFIG
    if targets is not None or interval is not None:
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(render(targets or {}, interval), sort_keys=False))
    port = port or free_port()
    cmd = [
        binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with open(workdir / "prometheus.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, workdir)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = (workdir / "prometheus.log").read_text()[-2000:]
            raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{tail}")
        try:
            if http(f"{prom.url}/-/ready", timeout=2)[0] == 200:
                (workdir / "prometheus.pid").write_text(str(proc.pid))
                return prom
        except OSError:
            pass
        if time.monotonic() > deadline:
            prom.stop()
            raise TimeoutError(f"prometheus not ready after {timeout:.0f}s")
        time.sleep(0.3)


def stop_pid(workdir: Path) -> bool:
    """Stops the Prometheus whose pid file is in `workdir` (`make monitor`'s); False if none."""
    pid_file = Path(workdir) / "prometheus.pid"
    if not pid_file.exists():
        return False
    try:
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
    except ProcessLookupError:
        pass
    pid_file.unlink()
    return True
