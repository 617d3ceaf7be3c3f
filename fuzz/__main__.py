"""`make fuzz`: generated malformed requests against a real torchserve serving every model.

python -m fuzz [--requests 10000] [--clients 8] [--seed 0] [--models a,b] [--store model_store]
               [--examples examples] [--out benchmarks/results/fuzz.json] [--schemathesis 50]
Starts its own torchserve on free loopback ports with the store's .mar files, sends the cases
(fuzz/cases.py) from concurrent clients, judges every answer (fuzz/run.py), writes the report
then runs schemathesis over docs/openapi.json (fuzz/schema.py), and exits 1 when a goal was
missed.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fuzz.cases import generate, load_seeds
from fuzz.run import held, run
from fuzz.schema import run_schemathesis
from serve.server import model_names, start
from train.core.registry import ROOT


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="all", help="comma-separated, or all in the store")
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--examples", type=Path, default=ROOT / "examples")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.json")
    parser.add_argument(
        "--schemathesis", type=int, default=50, help="examples per OpenAPI operation; 0: skip"
    )
    args = parser.parse_args()
    models = model_names(args.store) if args.models == "all" else args.models.split(",")
    t0 = time.monotonic()
    cases = generate(load_seeds(args.examples, models), args.requests, args.seed)
    print(
        f"generated {len(cases)} requests for {len(models)} models in {time.monotonic() - t0:.0f} s"
    )
    with tempfile.TemporaryDirectory(prefix="fuzz-") as workdir:
        server = start(args.store, Path(workdir), models)
        try:
            result = run(server, cases, args.clients)
            if args.schemathesis:
                result["schemathesis"] = run_schemathesis(server, args.schemathesis, args.seed)
                print("\n".join(result["schemathesis"]["report_tail"]))
        finally:
            server.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    result = {
        "command": "python -m fuzz " + " ".join(sys.argv[1:]),
        "commit": commit.stdout.strip(),
        "seed": args.seed,
        "models": models,
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    ok = held(result) and result.get("schemathesis", {}).get("held", True)
    print(
        json.dumps(
            {k: result[k] for k in ("requests", "totals", "failure_counts", "workers_restarted")}
        )
    )
    print(f"{'held' if ok else 'FAILED'}: report in {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
