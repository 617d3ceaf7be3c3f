"""Starts the real torchserve binary on free ports with .mar files built from tiny training runs."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.build_mar import build
from scripts.tsctl import http, read_properties, token, wait_ready
from tests.conftest import ROOT, mirror

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running torchserve and how to talk to it."""

    inference: str
    management: str
    metrics: str
    key_file: Path
    artifacts: Path
    log_dir: Path
    proc: subprocess.Popen

    def predict(
        self, name: str, body: Any, content_type: str = "application/json", tok: str | None = None
    ) -> tuple[int, Any, dict]:
        """POSTs to /predictions/<name>; returns (status, JSON body, headers)."""
        import urllib.request

        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.inference}/predictions/{name}",
            data=data,
            method="POST",
            headers={"Content-Type": content_type},
        )
        req.add_header("Authorization", f"Bearer {tok or token('inference', self.key_file)}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            return e.code, parsed, dict(e.headers)


def start_server(store: Path, workdir: Path, artifacts: Path, models: list[str]) -> Server:
    """Writes config.properties from the committed one with free ports, then starts torchserve."""
    overrides = {
        f"{kind}_address": f"http://127.0.0.1:{free_port()}"
        for kind in ("inference", "management", "metrics")
    }
    overrides.update(grpc_inference_port=str(free_port()), grpc_management_port=str(free_port()))
    overrides["model_store"] = str(store)
    lines = [
        f"{line.split('=', 1)[0]}={overrides[line.split('=', 1)[0]]}"
        if line.split("=", 1)[0] in overrides
        else line
        for line in (ROOT / "config.properties").read_text().splitlines()
    ]
    props = "\n".join(lines) + "\n"
    (workdir / "config.properties").write_text(props)
    cfg = read_properties(workdir / "config.properties")
    log_dir = workdir / "logs"
    log_dir.mkdir(exist_ok=True)
    # TMPDIR: torchserve keeps its pid file there and refuses a second server sharing it.
    env = {
        **os.environ,
        "LOG_LOCATION": str(log_dir),
        "METRICS_LOCATION": str(log_dir),
        "TMPDIR": str(workdir),
    }
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    proc = subprocess.Popen(
        [
            "torchserve",
            "--start",
            "--foreground",
            "--ts-config",
            str(workdir / "config.properties"),
            "--model-store",
            str(store),
            "--models",
            "all",
            "--ncs",
        ],
        cwd=workdir,
        env=env,
        stdout=open(log_dir / "stdout.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(
        cfg["inference_address"],
        cfg["management_address"],
        cfg["metrics_address"],
        workdir / "key_file.json",
        artifacts,
        log_dir,
        proc,
    )
    try:
        wait_ready(server.management, models, server.key_file, timeout=240, proc=proc)
    except Exception:
        stop_server(server)
        raise
    return server


def stop_server(server: Server) -> int:
    """SIGTERM to the whole process group (frontend and workers); returns the exit code."""
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
    return server.proc.returncode


@pytest.fixture(scope="session")
def graph_store(tiny_artifacts, tmp_path_factory) -> Path:
    """The .mar files of the graph models, built with the real torch-model-archiver."""
    if mirror() is None:
        pytest.skip("DATA_MIRROR is not set")
    store = tmp_path_factory.mktemp("model_store")
    for name in ("cora_gcn", "cora_gat", "mutag_gcn"):
        build(name, tiny_artifacts, store)
    return store


@pytest.fixture(scope="session")
def server(graph_store, tiny_artifacts, tmp_path_factory):
    """One torchserve for the e2e session, stopped (and checked to stop) at the end."""
    if shutil.which("java") is None:
        pytest.fail("java is not installed: run scripts/ensure_java.sh")
    workdir = tmp_path_factory.mktemp("torchserve")
    srv = start_server(graph_store, workdir, tiny_artifacts, ["cora_gcn", "cora_gat", "mutag_gcn"])
    yield srv
    stop_server(srv)


__all__ = ["Server", "http", "start_server", "stop_server"]
