"""`make bench`: per model, in-process scripted-model latency next to served latency over HTTP.

In-process, each .mar is loaded through TorchServe's own model loader (the code path a worker
runs), the real example request from examples/ is parsed by the handler, and
`model(*handler.collate(items))` is timed at batch 1 and larger batches; the whole handler
(`handle`) is timed at batch 1 too. Served, a fresh torchserve with the committed
config.properties answers the same request over one keep-alive connection (1 client), and 16
client threads measure throughput with the model's dynamic batching on and with a copy of the
model registered at batch size 1. TorchServe's /metrics counters split the served time.

Writes benchmarks/results/<model>.json and benchmarks/results/latency.md.
Usage: python -m benchmarks.latency [--models a b] [--store model_store] [--seconds 3]
"""

import argparse
import http.client as httpclient
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
import ts
from ts.context import RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.model_loader import ModelLoaderFactory

from scripts.tsctl import ROOT, http, model_names, start_server, stop_server, token

RESULTS = ROOT / "benchmarks" / "results"
BATCHES = (1, 2, 4, 8, 16, 32)
CLIENTS = 16


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def timed(fn: Callable[[], Any], seconds: float, min_iters: int = 20) -> list[float]:
    """Runs fn repeatedly for about `seconds` after a warm-up; returns latencies in ms."""
    for _ in range(5):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_iters or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
        if len(times) >= 5000:
            break
    return times


def load_service(
    mar: Path, workdir: Path, gpu_id: Optional[int] = None, batch_size: int = 32
) -> Any:
    """Unpacks a .mar and loads it as a TorchServe worker does; returns the Service.

    gpu_id is what TorchServe gives a CUDA worker (benchmarks/gpu_profile.py); None is CPU.
    """
    model_dir = workdir / mar.stem
    with zipfile.ZipFile(mar) as z:
        z.extractall(model_dir)
    manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
    metrics = MetricsCacheYamlImpl(str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
    metrics.initialize_cache()
    # The worker process runs with the model dir on sys.path (handler modules import flat).
    sys.path.insert(0, str(model_dir))
    loader = ModelLoaderFactory.get_model_loader()
    return loader.load(
        mar.stem,
        str(model_dir),
        manifest["model"]["handler"],
        gpu_id,
        batch_size,
        metrics_cache=metrics,
    )


def example_request() -> dict[str, dict[str, str]]:
    return json.loads((ROOT / "examples" / "index.json").read_text())


def in_process(name: str, mar: Path, workdir: Path, seconds: float) -> dict[str, Any]:
    """Scripted-model latency per batch size, and the whole handler at batch 1."""
    service = load_service(mar, workdir)
    handler, ctx = service._entry_point.__self__, service.context
    entry = example_request()[name]
    body = (ROOT / "examples" / entry["file"]).read_bytes()
    headers = {"Content-Type": entry["content_type"]}

    def handle(n: int) -> list[Any]:
        ctx.request_processor = [RequestProcessor(dict(headers)) for _ in range(n)]
        ctx.request_ids = {i: f"bench-{i}" for i in range(n)}
        ctx.metrics.request_ids = ctx.request_ids
        return handler.handle([{"body": body} for _ in range(n)], ctx)

    handle(1)
    batch = handler.preprocess([{"body": body}])
    [item] = [it for _, it in batch["good"]]
    results: dict[str, Any] = {"batches": {}}
    for b in BATCHES:
        items = [item] * b
        with torch.inference_mode():
            lat = timed(lambda items=items: handler.model(*handler.collate(items)), seconds)
        p50 = statistics.median(lat)
        results["batches"][str(b)] = {"p50_ms": round(p50, 3), "per_s": round(b * 1000 / p50, 1)}
    best = max(results["batches"], key=lambda b: results["batches"][b]["per_s"])
    lat = timed(lambda: handle(1), seconds)
    results.update(
        model_p50_ms_batch1=results["batches"]["1"]["p50_ms"],
        best_batch=int(best),
        best_batch_per_s=results["batches"][best]["per_s"],
        handler_p50_ms_batch1=round(statistics.median(lat), 3),
        torch_threads=torch.get_num_threads(),
    )
    return results


class Client:
    """One keep-alive HTTP connection posting the example request."""

    def __init__(self, base: str, tok: str, name: str, body: bytes, content_type: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conn = httpclient.HTTPConnection(host, int(port), timeout=60)
        self.path, self.body = f"/predictions/{name}", body
        self.headers = {"Content-Type": content_type, "Authorization": f"Bearer {tok}"}

    def post(self) -> int:
        self.conn.request("POST", self.path, body=self.body, headers=self.headers)
        resp = self.conn.getresponse()
        resp.read()
        return resp.status


def counters(metrics_url: str, name: str) -> dict[str, float]:
    """TorchServe's cumulative per-model counters from /metrics (Prometheus text)."""
    text = http(f"{metrics_url}/metrics")[1].decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if f'model_name="{name}"' in line and not line.startswith("#"):
            out[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
    return out


def throughput(server: Any, tok: str, name: str, body: bytes, ctype: str, seconds: float) -> float:
    """Requests/s that CLIENTS closed-loop client threads get through."""
    done = [0] * CLIENTS
    errors = [0] * CLIENTS
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        client = Client(server.inference, tok, name, body, ctype)
        while time.perf_counter() < stop:
            if client.post() == 200:
                done[i] += 1
            else:
                errors[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if sum(errors):
        raise RuntimeError(f"{name}: {sum(errors)} failed requests under load")
    return sum(done) / (time.perf_counter() - start)


def served(server: Any, name: str, seconds: float) -> dict[str, Any]:
    """p50 at 1 client with keep-alive, the server-side split, and throughput at 16 clients."""
    entry = example_request()[name]
    body = (ROOT / "examples" / entry["file"]).read_bytes()
    tok = token("inference", server.key_file)
    client = Client(server.inference, tok, name, body, entry["content_type"])
    assert client.post() == 200, f"{name}: example request failed"
    before = counters(server.metrics, name)
    lat = timed(client.post, seconds, min_iters=50)
    after = counters(server.metrics, name)
    n = after["ts_inference_requests_total"] - before["ts_inference_requests_total"]
    per_req = {
        key: round((after[key] - before[key]) / n / 1000, 3)
        for key in ("ts_inference_latency_microseconds", "ts_queue_latency_microseconds")
    }
    result = {
        "p50_ms_1_client": round(statistics.median(lat), 3),
        "p95_ms_1_client": round(percentile(lat, 95), 3),
        "p99_ms_1_client": round(percentile(lat, 99), 3),
        # Frontend's view: time in the backend worker (handler + IPC) and in the job queue.
        "backend_ms_per_request": per_req["ts_inference_latency_microseconds"],
        "queue_ms_per_request": per_req["ts_queue_latency_microseconds"],
        f"per_s_{CLIENTS}_clients_batching": round(
            throughput(server, tok, name, body, entry["content_type"], seconds), 1
        ),
    }
    mgmt = token("management", server.key_file)
    copy = f"{name}_nobatch"
    status, msg = http(
        f"{server.management}/models?url={name}.mar&model_name={copy}"
        "&batch_size=1&initial_workers=1&synchronous=true",
        mgmt,
        method="POST",
    )
    if status != 200:
        raise RuntimeError(f"registering {copy} failed: {status} {msg[:200]!r}")
    try:
        result[f"per_s_{CLIENTS}_clients_batch_size_1"] = round(
            throughput(server, tok, copy, body, entry["content_type"], seconds), 1
        )
    finally:
        http(f"{server.management}/models/{copy}", mgmt, method="DELETE")
    return result


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | model p50 b=1 (ms) | best batch: per s | handler p50 b=1 (ms) | "
        "served p50 1 client (ms) | served − model (ms) | goal ≤ 3 ms | "
        f"served per s, {CLIENTS} clients, batching | same, batch size 1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ip, sv = r["in_process"], r["served"]
        lines.append(
            f"| {r['model']} | {ip['model_p50_ms_batch1']:.2f} | {ip['best_batch']}: "
            f"{ip['best_batch_per_s']:.0f} | {ip['handler_p50_ms_batch1']:.2f} | "
            f"{sv['p50_ms_1_client']:.2f} | {r['overhead_ms']:.2f} | "
            f"{'met' if r['goal_met'] else 'missed'} | "
            f"{sv[f'per_s_{CLIENTS}_clients_batching']:.0f} | "
            f"{sv[f'per_s_{CLIENTS}_clients_batch_size_1']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    names = args.models or model_names(args.store)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        local = {}
        threads = torch.get_num_threads()
        for n in names:
            # A handler's torch_threads (model-config.yaml) must not carry over to the next model.
            torch.set_num_threads(threads)
            local[n] = in_process(n, args.store / f"{n}.mar", work, args.seconds)
        (work / "ts").mkdir()
        server = start_server(args.store, work / "ts", args.store, names)
        try:
            for name in names:
                sv = served(server, name, args.seconds)
                overhead = sv["p50_ms_1_client"] - local[name]["model_p50_ms_batch1"]
                row = {
                    "model": name,
                    "command": "make bench",
                    "machine": machine(),
                    "in_process": local[name],
                    "served": sv,
                    "overhead_ms": round(overhead, 3),
                    "goal_met": overhead <= 3.0,
                }
                (RESULTS / f"{name}.json").write_text(json.dumps(row, indent=2) + "\n")
                rows.append(row)
                print(f"{name}: {json.dumps(row['served'])}")
        finally:
            stop_server(server)
    m = machine()
    md = (
        f"# make bench\n\nMachine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"torch {m['torch']}. Command: `make bench`. Each model serves the real example "
        "request from `examples/`.\n\n" + table(rows) + "\n"
    )
    (RESULTS / "latency.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
