"""`make bench-metrics`: what the model metrics cost, p50 at 1 client with them on and off.

A fresh torchserve with the committed config.properties serves the chosen models, once with the
handlers' model metrics on and once with BUNDLE_MODEL_METRICS=0 in its environment (read by each
worker at initialize: handlers/model_metrics.py), alternating `--rounds` times so that a drift of
the machine falls on both. Each model's real example request (examples/) is timed over one
keep-alive connection. The budget is 0.3 ms of p50 (issue 15); measure on a quiet machine.

End to end, one setting's p50 moves by more than the budget between two servers, so
`--in-worker` times the cost where it is paid instead: each .mar is loaded in this process as a
worker loads it (serve/inprocess.py), its example goes through the handler's `handle` `--requests`
times, and the handler's own `model_metrics.record` (observe + emit into TorchServe's metrics
cache, whose lines go to a log handler as in the worker) is timed around each call. With the
metrics off, `record` returns at once, so its time is the whole on-minus-off difference in the
worker; the frontend's parsing of the metric lines is not in it.

Writes benchmarks/results/metrics_cost.json (--in-worker: metrics_cost_worker.json).
Usage: python -m benchmarks.metrics_cost [--models a b] [--store model_store] [--seconds 10]
       [--rounds 2] [--out PATH] [--in-worker [--requests 2000]]
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.clients import Client
from benchmarks.common import RESULTS, example, machine, percentile, timed
from serve.config import ROOT
from serve.metrics import scrape
from serve.server import model_names, start

BUDGET_MS = 0.3
OFF = {"BUNDLE_MODEL_METRICS": "0"}


def measure(store: Path, models: list[str], on: bool, seconds: float) -> dict[str, Any]:
    """One server, metrics on or off: each model's 1-client latencies (ms), and whether the
    server exported any model metric for it (the switch is checked, not assumed)."""
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        server = start(store, Path(tmp), models, env=None if on else OFF)
        try:
            out: dict[str, Any] = {}
            for name in models:
                body, ctype = example(name)
                client = Client(
                    server.inference, f"/predictions/{name}", body, ctype, server.token()
                )
                assert client.post() == 200, f"{name}: example request failed"
                lat = timed(client.post, seconds, min_iters=50)
                exported = any(
                    s.name == "bundle_inputs_total" and s.labels.get("ModelName") == name
                    for s in scrape(server.metrics)
                )
                out[name] = {"latencies_ms": lat, "metrics_exported": exported}
            return out
        finally:
            server.stop()


def summary(runs: list[list[float]]) -> dict[str, float]:
    lat = [x for run in runs for x in run]
    return {
        "p50_ms": round(statistics.median(lat), 4),
        "p95_ms": round(percentile(lat, 95), 4),
        "requests": len(lat),
        # Each round's own p50: how much a p50 moves between servers of the same setting.
        "round_p50_ms": [round(statistics.median(r), 4) for r in runs],
    }


def in_worker(store: Path, models: list[str], requests: int) -> dict[str, Any]:
    """Each model's `model_metrics.record` time per batch of one request (ms), in-process."""
    import logging
    import os
    import time

    from benchmarks.common import load_service
    from serve.inprocess import handle

    # The worker logs metric lines to its stdout at INFO; the same amount of formatting and
    # writing here, into /dev/null.
    sink = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives for the process
    logging.getLogger("ts.metrics").addHandler(sink)
    logging.getLogger("ts.metrics").setLevel(logging.INFO)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        for name in models:
            service = load_service(store / f"{name}.mar", Path(tmp), batch_size=1)
            handler = service._entry_point.__self__
            if not handler.model_metrics.enabled:
                raise RuntimeError(f"{name}: model metrics are off in this environment")
            times: list[float] = []
            record = handler.model_metrics.record

            def timed_record(*a: Any, _record: Any = record, _times: list = times) -> None:
                t0 = time.perf_counter()
                _record(*a)
                _times.append((time.perf_counter() - t0) * 1000)

            handler.model_metrics.record = timed_record
            body, ctype = example(name)
            for _ in range(requests):
                status, _, _ = handle(service, [{"body": body}], [{"Content-Type": ctype}])[0]
                if status != 200:
                    raise RuntimeError(f"{name}: example answered {status}")
            lat = times[requests // 10 :]  # the first tenth warms up
            out[name] = {
                "record_p50_ms": round(statistics.median(lat), 4),
                "record_p95_ms": round(percentile(lat, 95), 4),
                "record_mean_ms": round(statistics.fmean(lat), 4),
                "requests": len(lat),
                "within_budget": statistics.median(lat) <= BUDGET_MS,
            }
            print(f"{name}: record p50 {out[name]['record_p50_ms']:.4f} ms", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--in-worker", action="store_true", help="time record() in-process")
    parser.add_argument("--requests", type=int, default=2000, help="--in-worker: per model")
    args = parser.parse_args(argv)
    models = args.models or model_names(args.store)
    if args.in_worker:
        worker = {
            "budget_ms": BUDGET_MS,
            "machine": machine("torchserve"),
            "command": "python -m benchmarks.metrics_cost --in-worker",
            "models": in_worker(args.store, models, args.requests),
        }
        out = args.out or RESULTS / "metrics_cost_worker.json"
        out.write_text(json.dumps(worker, indent=2) + "\n")
        print(f"wrote {out}")
        return worker
    args.out = args.out or RESULTS / "metrics_cost.json"
    runs: dict[str, dict[str, list]] = {m: {"on": [], "off": []} for m in models}
    for _ in range(args.rounds):
        for on in (True, False):
            for name, got in measure(args.store, models, on, args.seconds).items():
                if got["metrics_exported"] != on:
                    raise RuntimeError(
                        f"{name}: metrics {'on' if on else 'off'} but exported={got}"
                    )
                runs[name]["on" if on else "off"].append(got["latencies_ms"])
    result: dict[str, Any] = {
        "budget_ms": BUDGET_MS,
        "machine": machine("torchserve"),
        "models": {},
    }
    for name, r in runs.items():
        on, off = summary(r["on"]), summary(r["off"])
        cost = round(on["p50_ms"] - off["p50_ms"], 4)
        result["models"][name] = {
            "on": on,
            "off": off,
            "p50_cost_ms": cost,
            "within_budget": cost <= BUDGET_MS,
        }
        print(
            f"{name}: p50 {on['p50_ms']:.3f} ms on, {off['p50_ms']:.3f} ms off, cost {cost:+.3f} ms"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
