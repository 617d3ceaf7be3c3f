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
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.clients import Client, closed_loop
from benchmarks.common import (
    RESULTS,
    example,
    handler_of,
    load_service,
    machine,
    percentile,
    rate,
    timed,
)
from serve.config import ROOT
from serve.metrics import BACKEND_US, QUEUE_US, REQUESTS, per_model, scrape
from serve.server import Server, model_names, start

BATCHES = (1, 2, 4, 8, 16, 32)
CLIENTS = 16


def in_process(name: str, mar: Path, workdir: Path, seconds: float) -> dict[str, Any]:
    """Scripted-model latency per batch size, and the whole handler at batch 1."""
    from ts.context import RequestProcessor

    handler, ctx = handler_of(load_service(mar, workdir))
    body, ctype = example(name)

    def handle(n: int) -> list[Any]:
        ctx.request_processor = [RequestProcessor({"Content-Type": ctype}) for _ in range(n)]
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
        results["batches"][str(b)] = rate(lat, b)
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


def throughput(server: Server, name: str, body: bytes, ctype: str, seconds: float) -> float:
    """Requests/s that CLIENTS closed-loop client threads get through."""
    path = f"/predictions/{name}"
    done = closed_loop(server.inference, path, [body], ctype, CLIENTS, seconds, tok=server.token())
    if done["err"]:
        raise RuntimeError(f"{name}: {done['err']} failed requests under load: {done['codes']}")
    return done["ok"] / seconds


def served(server: Server, name: str, seconds: float) -> dict[str, Any]:
    """p50 at 1 client with keep-alive, the server-side split, and throughput at 16 clients."""
    body, ctype = example(name)
    client = Client(server.inference, f"/predictions/{name}", body, ctype, server.token())
    assert client.post() == 200, f"{name}: example request failed"
    before = per_model(scrape(server.metrics), name)
    lat = timed(client.post, seconds, min_iters=50)
    after = per_model(scrape(server.metrics), name)
    n = after[REQUESTS] - before[REQUESTS]
    per_req = {
        key: round((after[key] - before[key]) / n / 1000, 3) for key in (BACKEND_US, QUEUE_US)
    }
    result = {
        "p50_ms_1_client": round(statistics.median(lat), 3),
        "p95_ms_1_client": round(percentile(lat, 95), 3),
        "p99_ms_1_client": round(percentile(lat, 99), 3),
        # Frontend's view: time in the backend worker (handler + IPC) and in the job queue.
        "backend_ms_per_request": per_req[BACKEND_US],
        "queue_ms_per_request": per_req[QUEUE_US],
        f"per_s_{CLIENTS}_clients_batching": round(
            throughput(server, name, body, ctype, seconds), 1
        ),
    }
    copy = f"{name}_nobatch"
    mgmt = server.client()
    mgmt.register(f"{name}.mar", 1, model_name=copy, batch_size=1)
    try:
        result[f"per_s_{CLIENTS}_clients_batch_size_1"] = round(
            throughput(server, copy, body, ctype, seconds), 1
        )
    finally:
        mgmt.unregister(copy)
    return result


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
        server = start(args.store, work / "ts", names, artifacts=args.store)
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
            server.stop()
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
