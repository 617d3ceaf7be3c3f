"""What the payload log costs a request: p50 of one request through the worker's handler, with
the drift monitor's payload log off and on (every item logged: statistics, a second pass to the
penultimate layer for the embedding, one JSON line). In-process, one request per batch.

Two pairs: `p50_ms_off`/`p50_ms_on` leave an idle gap of 20 ms between requests (in which the
writer thread finishes, untimed), as one client with think time does, so `cost_ms` is what the
request path itself pays; the `_back_to_back` pair sends the next request at once, so the
writer competes with it for the cores, as under saturation.

Usage: python -m benchmarks.payload_log [--artifacts artifacts] [--models a b] [--seconds 2]
Writes benchmarks/results/payload_log.json.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from hydra.utils import get_method

from benchmarks.common import RESULTS, handler_of, load_service, machine
from serve.archive import build_mar
from serve.config import ROOT
from train.core.registry import experiment_config, spec

MODELS = ["mutag_gcn", "cora_gcn", "qm9_et", "imdb_bert", "flowers_cnn"]


def p50_ms(handler, ctx, body: bytes, ctype: str, seconds: float, settle: bool = False) -> float:
    from ts.context import RequestProcessor

    times = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or len(times) < 20:
        ctx.request_processor = [RequestProcessor({"Content-Type": ctype})]
        start = time.perf_counter()
        handler.handle([{"body": body}], ctx)
        times.append((time.perf_counter() - start) * 1000)
        if settle:  # the same idle gap with the log off and on: idle workers wake slower
            if handler.payload_log is not None:
                handler.payload_log.flush()
            time.sleep(0.02)
    return round(statistics.median(times), 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--out", type=Path, default=RESULTS / "payload_log.json")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BUNDLE_PAYLOAD_DIR"] = str(Path(tmp) / "payload")
        for name in args.models:
            model = spec(name)
            _, ctype, body = get_method(model.example)(experiment_config(model.experiment).data)
            mar = build_mar(name, args.artifacts, Path(tmp) / "store")
            handler, ctx = handler_of(load_service(mar, Path(tmp) / "work"))
            plog = handler.payload_log
            plog.rate = 1.0  # every item, whatever model-config.yaml's rate
            off, on, busy, off_busy = [], [], [], []
            for _ in range(3):  # alternate, so drifting machine load hits both alike
                handler.payload_log = None
                off.append(p50_ms(handler, ctx, body, ctype, args.seconds, settle=True))
                off_busy.append(p50_ms(handler, ctx, body, ctype, args.seconds))
                handler.payload_log = plog
                on.append(p50_ms(handler, ctx, body, ctype, args.seconds, settle=True))
                busy.append(p50_ms(handler, ctx, body, ctype, args.seconds))
                plog.flush()
            off_ms, on_ms = statistics.median(off), statistics.median(on)
            results[name] = {
                "p50_ms_off": off_ms,
                "p50_ms_on": on_ms,
                "cost_ms": round(on_ms - off_ms, 3),
                "p50_ms_off_back_to_back": statistics.median(off_busy),
                "p50_ms_on_back_to_back": statistics.median(busy),
                "has_embed": hasattr(handler.model, "embed"),
                "artifacts": str(args.artifacts),
            }
            print(name, results[name], flush=True)
    out = {"machine": machine("torch"), "results": results}
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
