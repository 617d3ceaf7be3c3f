"""docker/entrypoint.py as the container's PID 1 would run it, on the e2e session's .mar files.

Readiness: GET /ready on the probe port is 503 with a reason until every model has all its
workers READY, then 200. Shutdown: SIGTERM under load turns /ready to 503 at once, every
request sent before it is answered 200, and the process exits 0 within Cloud Run's 10 s.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serve.client import exchange
from tests.conftest import mirror
from tests.unit.deploy.helpers import ROOT
from train.graph.data import load_tu
from train.graph.requests import mutag_request

pytestmark = pytest.mark.e2e
MODELS = ["cora_gat", "mutag_gcn"]
CLIENTS = 8


def free_ports(n: int) -> list[int]:
    """n different free ports (each held until all are picked)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def probe(url: str) -> tuple[int, dict]:
    try:
        status, raw, _ = exchange(url, timeout=5)
        return status, json.loads(raw)
    except OSError as e:
        return 0, {"problems": [f"unreachable: {e}"]}


@pytest.fixture(scope="module")
def mutag_bodies(data_root):
    return [
        json.dumps(mutag_request(g)).encode() for g in load_tu("MUTAG", data_root, mirror())[:32]
    ]


def start_entrypoint(store: Path, run_dir: Path) -> tuple[subprocess.Popen, str, str]:
    """The entrypoint with Cloud Run's settings (PORT, TOKEN_AUTH=off) on free ports."""
    port, probe_port, mgmt, metrics, grpc_i, grpc_m = free_ports(6)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "PORT": str(port),
        "PROBE_PORT": str(probe_port),
        "PRIVATE_PORTS": f"management={mgmt},metrics={metrics},"
        f"grpc_inference={grpc_i},grpc_mgmt={grpc_m}",
        "TOKEN_AUTH": "off",
        "MODELS": ",".join(MODELS),
        "MODEL_STORE": str(store),
        "BASE_CONFIG": str(ROOT / "config.properties"),
        "RUN_DIR": str(run_dir),
    }
    out = open(run_dir.parent / "entrypoint.out", "wb")  # noqa: SIM115 (the child holds it)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "docker" / "entrypoint.py")],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{probe_port}"


def test_ready_only_when_every_worker_is_and_sigterm_drains_in_flight_requests(
    graph_store, mutag_bodies, tmp_path
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc, inference, probes = start_entrypoint(graph_store, run_dir)
    try:
        # Readiness: 503 with a reason until every worker of both models is READY.
        not_ready, started = [], time.monotonic()
        while (answer := probe(f"{probes}/ready"))[0] != 200:
            assert proc.poll() is None, (run_dir.parent / "entrypoint.out").read_text()[-3000:]
            assert time.monotonic() - started < 240, answer
            not_ready.append(answer)
            time.sleep(0.2)
        assert not_ready, "the probe answered 200 before TorchServe could have loaded anything"
        assert all(status in (0, 503) and body["problems"] for status, body in not_ready)
        assert probe(f"{probes}/live")[0] == 200
        # The probe port also serves v2 metadata (serve/v2_metadata.py; no token: TOKEN_AUTH off).
        status, metadata = probe(f"{probes}/v2/models/mutag_gcn")
        assert status == 200 and metadata["name"] == "mutag_gcn", metadata
        assert {t["name"] for t in metadata["inputs"]} == {"x", "atoms", "edge_index"}
        ready = probe(f"{probes}/v2/models/mutag_gcn/ready")
        assert ready == (200, {"name": "mutag_gcn", "ready": True})
        assert probe(f"{probes}/v2/models/no_such_model")[0] == 404

        # Load: CLIENTS threads keep a request in flight each; a router stops sending once
        # /ready is 503, as Cloud Run and a Kubernetes Service do.
        routing = threading.Event()
        routing.set()
        sent: list[tuple[float, float, int | str]] = []  # (sent at, answered at, status)
        lock = threading.Lock()

        def client(i: int) -> None:
            n = i
            while routing.is_set():
                body = mutag_bodies[n % len(mutag_bodies)]
                n += CLIENTS
                t0 = time.monotonic()
                try:
                    status, _, _ = exchange(
                        f"{inference}/predictions/mutag_gcn",
                        None,
                        "POST",
                        body,
                        {"Content-Type": "application/json"},
                        timeout=30,
                    )
                except OSError as e:
                    status = f"{type(e).__name__}: {e}"
                with lock:
                    sent.append((t0, time.monotonic(), status))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(3)
        term = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        # The entrypoint's SIGTERM handler runs in its main thread, and its probe thread can
        # answer one probe before it has: poll as a router does, for at most 2 s.
        first = probe(f"{probes}/ready")
        deadline = time.monotonic() + 2
        while first[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
            first = probe(f"{probes}/ready")
        routing.clear()
        for t in threads:
            t.join(timeout=40)
        code = proc.wait(timeout=30)
        seconds = time.monotonic() - term
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = (run_dir.parent / "entrypoint.out").read_text()
    in_flight = [s for s in sent if s[0] < term < s[1]]
    failed = [s for s in sent if s[2] != 200]
    print(
        f"{len(sent)} requests, {len(in_flight)} in flight at SIGTERM, {len(failed)} failed, "
        f"exit {code} after {seconds:.1f} s"
    )
    assert first[0] in (0, 503) and (first[0] == 0 or "draining" in first[1]["problems"][0])
    assert len(in_flight) >= 1, "no request was in flight at SIGTERM: the test proves nothing"
    assert [s for s in failed if s[0] < term] == [], log[-3000:]
    assert failed == [], "a request sent before the router stopped failed"
    assert code == 0, log[-3000:]
    assert seconds < 10, log[-3000:]
    assert "drained after" in log
