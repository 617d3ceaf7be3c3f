"""`make chaos`: worker faults under load, per model (issue 13, section 2).

Kill: closed-loop clients post the model's real payload pool; `--kill-at` seconds in, one
worker of the model (its pid from the management API's `workers[].pid`) gets SIGKILL, which
is also what the kernel's OOM killer sends. Over the `--window` seconds every request's start,
end and status is kept: failed requests (any status but 200, -1 = no HTTP answer), the failed
share of the window, the recovery (kill to the end of the last failed answer: every answer is
200 after it), the longest wait of a request answered after the kill (a model with one
worker queues until the new worker is READY), the seconds until TorchServe has a new READY
worker, and whether TorchServe's log says it restarted the worker.

Memory: per model, the largest request its limits admit (model-config.yaml `handler:`), with
`--memory-instances` instances where the model takes `{"instances": [...]}` (2 by default; 0 =
max_instances), sent alone while the worker's RSS is sampled every 10 ms: status, peak, growth
over the idle worker, what the worker keeps afterwards, and whether it survived.
`--worker-memory-cap MIB` first sets each worker's RLIMIT_AS to its size plus MIB (psutil),
the containment docs/reliability.md discusses.

Writes benchmarks/results/faults.json.
Usage: python -m benchmarks.faults [--models a b] [--window 20] [--kill-at 5] [--clients 4]
       [--retry] [--memory-instances N] [--worker-memory-cap MIB] [--skip-kill] [--skip-memory]
"""

import argparse
import base64
import io
import json
import random
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Optional

import urllib3
from urllib3.util import Retry

from benchmarks.clients import Client
from benchmarks.common import (
    RESULTS,
    machine,
    mar_config,
    memory_gib,
    server_arguments,
    write_result,
)
from benchmarks.procs import RssSampler, processes, ready_pids, sigkill, worker_pids
from serve.client import exchange
from serve.server import Server, model_names, start

OUT = RESULTS / "faults.json"
COMMAND = "make chaos"
# TorchServe's WorkerThread logs these when a worker process dies and when it starts another.
RESTART_LINES = ("Worker disconnected", "Retry worker")


def pool_bodies(pool: Path, model: str) -> tuple[list[bytes], list[str]]:
    """(bodies, Content-Types) of a model's payload pool (`make pools`)."""
    entry = json.loads((pool / "index.json").read_text())[model]
    payloads = entry["payloads"]
    return [(pool / p["file"]).read_bytes() for p in payloads], [
        p["content_type"] for p in payloads
    ]


def client_retry() -> Retry:
    """The retry docs/reliability.md advises: 503 (queue full) and 507 (worker died) at most
    3 times, exponential backoff with jitter, only before an answer started (no read retry)."""
    return Retry(
        total=3,
        connect=3,
        read=0,
        status=3,
        status_forcelist=(503, 507),
        allowed_methods=None,  # POST too: a prediction has no side effect
        backoff_factor=0.25,
        backoff_jitter=0.25,
        backoff_max=2.0,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


class Load:
    """`clients` closed-loop threads posting a model's pool; every request is recorded as
    (start, end, status) on time.monotonic(). retry: each request through urllib3 with
    client_retry() (its status is the last try's)."""

    def __init__(
        self, server: Server, model: str, pool: Path, clients: int, retry: bool = False
    ) -> None:
        self.server, self.model, self.clients, self.retry = server, model, clients, retry
        self.bodies, self.ctypes = pool_bodies(pool, model)
        self.records: list[tuple[float, float, int]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(k,)) for k in range(clients)]

    def run(self, k: int) -> None:
        tok = self.server.token()
        client = Client(self.server.inference, f"/predictions/{self.model}", None, "", tok)
        pool = urllib3.PoolManager(retries=client_retry(), timeout=120)
        url = f"{self.server.inference}/predictions/{self.model}"
        rng = random.Random(k)
        while not self.stop.is_set():
            i = rng.randrange(len(self.bodies))
            client.headers["Content-Type"] = self.ctypes[i]
            t0 = time.monotonic()
            if self.retry:
                try:
                    headers = dict(client.headers)
                    code = pool.request("POST", url, body=self.bodies[i], headers=headers).status
                except urllib3.exceptions.HTTPError:
                    code = -1
            else:
                code = client.post(self.bodies[i])
            with self.lock:
                self.records.append((t0, time.monotonic(), code))

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def restart_logged(log: Path, offset: int) -> list[str]:
    """The lines of ts_log.log written after `offset` that report a worker death or restart."""
    if not log.exists():
        return []
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [line for line in text.splitlines() if any(s in line for s in RESTART_LINES)]


def wait_new_worker(server: Server, model: str, old: list[int], timeout: float) -> float:
    """Seconds until the model has as many READY workers as before, none of them `old[0]`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            now = ready_pids(server, model)
        except (OSError, RuntimeError, ValueError):
            now = []
        if len(now) >= len(old) and old[0] not in now:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise TimeoutError(f"{model}: no new READY worker {timeout:.0f} s after the kill")


def kill_under_load(
    server: Server,
    model: str,
    pool: Path,
    clients: int = 4,
    window: float = 20.0,
    kill_at: float = 5.0,
    ready_timeout: float = 120.0,
    retry: bool = False,
) -> dict[str, Any]:
    """SIGKILL one of the model's workers while clients load it; the figures of one kill."""
    log = server.log_dir / "ts_log.log"
    offset = log.stat().st_size if log.exists() else 0
    old = worker_pids(server, model)
    with Load(server, model, pool, clients, retry) as load:
        t_begin = time.monotonic()
        time.sleep(kill_at)
        t_kill = time.monotonic()
        sigkill(old[0])
        worker_back_s = wait_new_worker(server, model, old, ready_timeout)
        time.sleep(max(0.0, t_begin + window - time.monotonic()))
    t_end = t_begin + window
    # Only requests that started and ended inside the window count (none are cut off).
    window_recs = [r for r in load.records if r[0] >= t_begin and r[1] <= t_end]
    failed = [r for r in window_recs if r[2] != 200]
    codes: dict[str, int] = {}
    for r in failed:
        codes[str(r[2])] = codes.get(str(r[2]), 0) + 1
    after = [r for r in window_recs if r[1] >= t_kill]  # in flight at the kill, or later
    lines = restart_logged(log, offset)
    return {
        "model": model,
        "workers": len(old),
        "clients": clients,
        "client_retry": retry,
        "window_s": window,
        "kill_at_s": kill_at,
        "requests": len(window_recs),
        "failed": len(failed),
        "failed_pct": round(100 * len(failed) / max(1, len(window_recs)), 3),
        "failed_codes": codes,
        "connection_failures": sum(1 for r in failed if r[2] == -1),
        # Failed requests that were sent after the kill: 0 means only those in flight failed.
        "failed_started_after_kill": sum(1 for r in failed if r[0] > t_kill + 0.05),
        "recovery_s": round(max((r[1] for r in failed), default=t_kill) - t_kill, 3),
        "worker_back_s": round(worker_back_s, 3),
        "max_wait_after_kill_s": round(max((r[1] - r[0] for r in after), default=0.0), 3),
        "restart_logged": bool(lines),
        "restart_log_lines": len(lines),
    }


# --- memory: the largest request each model's limits admit -------------------------------


def handler_file(mar: Path) -> str:
    with zipfile.ZipFile(mar) as z:
        return json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]["handler"]


def _instances(one: dict[str, Any], n: int, max_bytes: int) -> tuple[bytes, int]:
    """`{"instances": [one] * k}` with the largest k <= n that fits in max_bytes."""
    size = len(json.dumps(one)) + 2  # one instance and its ", " separator
    k = max(1, min(n, (max_bytes - len('{"instances": []}')) // size))
    return json.dumps({"instances": [one] * k}).encode(), k


def mar_limits(mar: Path) -> tuple[str, dict[str, Any]]:
    """(handler file, handler limits of model-config.yaml) packed in a .mar."""
    return handler_file(mar), mar_config(mar).get("handler") or {}


def worst_request(
    handler: str, config: dict[str, Any], instances: Optional[int] = None
) -> tuple[bytes, str, str, int]:
    """(body, Content-Type, what it is, instances): the largest request the limits admit.

    `handler` is the model's handler file, `config` its model-config.yaml `handler:` section;
    `instances` caps the `{"instances": [...]}` length below its max_instances (None = max).
    """
    limits = {"max_instances": 64, "max_body_bytes": 8 * 2**20, **config}
    n = min(instances or limits["max_instances"], limits["max_instances"])
    rng = random.Random(0)
    if handler == "node_classifier.py":
        # Every node and edge allowed, features sparse (dense x of 20,000 nodes is over the
        # body limit): GAT's attention is per edge and head.
        nodes, edges = limits["max_nodes"], limits["max_edges"]
        body = {
            "x_sparse": [[i % 500] for i in range(nodes)],
            "edge_index": [
                [rng.randrange(nodes) for _ in range(edges)],
                [rng.randrange(nodes) for _ in range(edges)],
            ],
        }
        return json.dumps(body).encode(), "application/json", f"{nodes} nodes, {edges} edges", 1
    if handler == "graph_classifier.py":
        nodes, edges = limits["max_nodes"], limits["max_edges"]
        one = {
            "atoms": ["C"] * nodes,
            "edge_index": [
                [rng.randrange(nodes) for _ in range(edges)],
                [rng.randrange(nodes) for _ in range(edges)],
            ],
        }
        body, k = _instances(one, n, limits["max_body_bytes"])
        return body, "application/json", f"{k} x ({nodes} nodes, {edges} edges)", k
    if handler == "molecule_energy.py":
        atoms = limits["max_atoms"]
        # A 4 x 4 x 2 grid 1.5 Å apart: every pair farther than min_distance.
        pos = [[1.5 * (i % 4), 1.5 * (i // 4 % 4), 1.5 * (i // 16)] for i in range(atoms)]
        one = {"atoms": ["C"] * atoms, "pos": pos, "forces": True}
        body, k = _instances(one, n, limits["max_body_bytes"])
        return body, "application/json", f"{k} x {atoms} atoms with forces", k
    if handler == "text_classifier.py":
        # Each review as long as the body limit allows: every one is cut to max_length tokens.
        per = limits["max_body_bytes"] // n - 64
        words = " ".join(rng.choice(["great", "awful", "film", "plot"]) for _ in range(per // 6))
        body, k = _instances({"text": words[:per]}, n, limits["max_body_bytes"])
        return body, "application/json", f"{k} x {per} bytes", k
    if handler == "image_classifier.py":
        # A decompression bomb within max_pixels: one colour compresses about 1000:1 in PNG.
        from PIL import Image

        side = int(limits["max_pixels"] ** 0.5)
        buf = io.BytesIO()
        Image.new("RGB", (side, side), (120, 80, 40)).save(buf, format="PNG")
        one = {"b64": base64.b64encode(buf.getvalue()).decode()}
        body, k = _instances(one, n, limits["max_body_bytes"])
        return body, "application/json", f"{k} x {side}x{side} PNG", k
    raise KeyError(f"no worst request for handler {handler}")


def memory_peak(
    server: Server,
    model: str,
    mar: Path,
    instances: Optional[int] = None,
    cap_mib: Optional[float] = None,
) -> dict[str, Any]:
    """Peak worker RSS while the model answers its worst request alone.

    cap_mib: first cap each worker's address space (RLIMIT_AS, set from outside with psutil)
    at its present size plus cap_mib, so an allocation beyond that fails in the worker
    instead of growing until the kernel's OOM killer ends it (or something else).
    """
    import resource

    body, ctype, what, n = worst_request(*mar_limits(mar), instances)
    procs = {k: p for k, p in processes(server, [model]).items() if k != "frontend"}
    pids = sorted(p.pid for p in procs.values())
    if cap_mib is not None:
        for p in procs.values():
            # The soft limit only: a raised hard limit could not be lowered back unprivileged.
            limit = int(p.memory_info().vms + cap_mib * 2**20)
            p.rlimit(resource.RLIMIT_AS, (limit, p.rlimit(resource.RLIMIT_AS)[1]))
    before = {k: p.memory_info().rss / 2**20 for k, p in procs.items()}
    t0 = time.monotonic()
    with RssSampler(procs, interval=0.01) as rss:
        url = f"{server.inference}/predictions/{model}"
        status, answer, _ = exchange(
            url, server.token(), "POST", body, {"Content-Type": ctype}, 300
        )
        seconds = time.monotonic() - t0
        time.sleep(1.0)
    after = {k: p.memory_info().rss / 2**20 for k, p in procs.items() if p.is_running()}
    # The worker that took the request is the one that grew most.
    label = max(procs, key=lambda k: (rss.peak(k) or 0) - before[k])
    growth = (rss.peak(label) or 0) - before[label]
    if cap_mib is not None:
        # Lift the cap again (a restarted worker would not have it either).
        for p in procs.values():
            if p.is_running():
                hard = p.rlimit(resource.RLIMIT_AS)[1]
                p.rlimit(resource.RLIMIT_AS, (hard, hard))
    return {
        "model": model,
        "request": what,
        "body_bytes": len(body),
        "address_space_cap_mib": cap_mib,
        "status": status,
        "error": None if status == 200 else answer[:300].decode(errors="replace"),
        "seconds": round(seconds, 3),
        "worker_rss_before_mib": round(before[label], 1),
        "worker_rss_peak_mib": round(rss.peak(label) or 0, 1),
        "worker_rss_growth_mib": round(growth, 1),
        "worker_rss_1s_after_mib": round(after.get(label, float("nan")), 1),
        "instances": n,
        "worker_survived": sorted(worker_pids(server, model)) == pids,
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    server_arguments(parser, "default: every .mar of the store")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per kill")
    parser.add_argument("--kill-at", type=float, default=5.0, help="seconds into the window")
    # Not max_instances by default: 16 photos of 24 Mpx take about 11 GB in one flowers worker.
    parser.add_argument(
        "--memory-instances", type=int, default=2, help="instances per worst request; 0 = max"
    )
    # With a cap, max_instances is safe to send: the worker fails the request at the cap.
    parser.add_argument(
        "--worker-memory-cap", type=float, help="send it under RLIMIT_AS = worker size + MiB"
    )
    parser.add_argument(
        "--retry", action="store_true", help="clients retry 503/507 (client_retry())"
    )
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    names = args.models or model_names(args.store)
    result: dict[str, Any] = {
        "command": COMMAND,
        "argv": " ".join(["python -m benchmarks.faults", *sys.argv[1:]]),
        "machine": {**machine("torchserve", "psutil"), "memory_gib": memory_gib()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "kill": [],
        "memory": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        server = start(args.store, Path(tmp), model_names(args.store))
        try:
            for name in names if not args.skip_kill else []:
                row = kill_under_load(
                    server, name, args.pool, args.clients, args.window, args.kill_at,
                    retry=args.retry,
                )  # fmt: skip
                result["kill"].append(row)
                print(json.dumps(row))
            for name in names if not args.skip_memory else []:
                mar = args.store / f"{name}.mar"
                cap = args.worker_memory_cap
                row = memory_peak(server, name, mar, args.memory_instances or None, cap)
                result["memory"].append(row)
                print(json.dumps(row))
        finally:
            server.stop()
    write_result(result, args.out)


if __name__ == "__main__":
    main()
