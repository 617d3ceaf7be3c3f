"""`make bench-metrics`: what the model metrics cost, p50 at 1 client with them on and off.

A fresh torchserve with the committed config.properties serves the chosen models, once with the
handlers' model metrics on and once with BUNDLE_MODEL_METRICS=0 in its environment (read by each
worker at initialize: handlers/model_metrics.py), alternating `--rounds` times so that a drift of
the machine falls on both. Each model's real example request (examples/) is timed over one
keep-alive connection. The budget is 0.3 ms of p50 (issue 15); measure on a quiet machine.

Writes benchmarks/results/metrics_cost.json.
Usage: python -m benchmarks.metrics_cost [--models a b] [--store model_store] [--seconds 10]
       [--rounds 2] [--out PATH]
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "metrics_cost.json")
    args = parser.parse_args(argv)
    models = args.models or model_names(args.store)
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
