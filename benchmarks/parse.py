"""Request parse time per model: the example body to its model-ready item, in the worker's code.

Times `handler.preprocess([{"body": example}])` (size and UTF-8 checks, the strict JSON parser,
the contract's validation and the tensor checks; for images also the pixel decode, which
`make bench-decode` times alone) of each model's .mar loaded as a TorchServe worker loads it.
For JSON examples it also times the two parts the validation can be split into, on the same
bytes: the strict parser alone (json_batch_handler.loads) and msgspec's typed decoder alone
(msgspec.json.decode(body, type=<Request>), which is not strict enough to be the parser: it
keeps the last of duplicate keys and refuses NaN without naming the field).

Run it once per store to compare handlers: a store built from an older commit's handlers gives
the "before", this tree's the "after" (see docs/contract.md). Writes
benchmarks/results/parse-<label>.json.
Usage: python -m benchmarks.parse [--store model_store] [--label after] [--seconds 2]
"""

import argparse
import base64
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, example, example_index, handler_of, load_service, machine
from benchmarks.common import timed as run_timed
from serve.config import ROOT

sys.path.insert(0, str(ROOT / "handlers"))
import msgspec  # noqa: E402

from contract import FAMILIES  # noqa: E402
from json_batch_handler import loads  # noqa: E402
from train.core.registry import spec  # noqa: E402


def p50(times: list[float]) -> float:
    return round(statistics.median(times), 4)


def parse_times(name: str, mar: Path, workdir: Path, seconds: float) -> dict[str, Any]:
    """Median ms of the handler's preprocess of the example, and of its JSON parts."""
    from ts.context import RequestProcessor

    handler, ctx = handler_of(load_service(mar, workdir))
    body, ctype = example(name)
    ctx.request_processor = [RequestProcessor({"Content-Type": ctype})]
    handler.context = ctx  # as handle() sets it: the reader goes by the request's Content-Type

    def preprocess(body: bytes = body) -> None:
        batch = handler.preprocess([{"body": body}])
        if batch["errors"]:  # a benchmark of an error path would measure nothing useful
            raise RuntimeError(f"{name}: the example failed to parse: {batch['errors']}")

    out: dict[str, Any] = {
        "content_type": ctype,
        "example_bytes": len(body),
        "preprocess_ms": p50(run_timed(preprocess, seconds)),
    }
    if ctype.startswith("image/") or ctype == "text/plain":
        # The same input in the JSON form of the contract ({"b64"} or {"text"}).
        as_json = {"b64": base64.b64encode(body).decode()} if ctype != "text/plain" else {}
        body = json.dumps(as_json or {"text": body.decode()}).encode()
        ctx.request_processor = [RequestProcessor({"Content-Type": "application/json"})]
        out["json_form_bytes"] = len(body)
        out["json_form_preprocess_ms"] = p50(run_timed(lambda: preprocess(body), seconds))
    # The JSON body's two possible parsers, alone on the same bytes.
    text = body.decode()
    decoder = msgspec.json.Decoder(FAMILIES[Path(spec(name).handler).stem].request)
    out["strict_loads_ms"] = p50(run_timed(lambda: loads(text), seconds))
    out["msgspec_typed_decode_ms"] = p50(run_timed(lambda: decoder.decode(body), seconds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--label", default="after", help="results file: parse-<label>.json")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per figure")
    parser.add_argument("--models", nargs="*", help="default: every model with an example")
    args = parser.parse_args()
    names = args.models or sorted(example_index())
    out: dict[str, Any] = {
        "command": f"python -m benchmarks.parse --store {args.store} --label {args.label}"
        f" --seconds {args.seconds}",
        "machine": machine("msgspec"),
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out["models"][name] = parse_times(
                name, args.store / f"{name}.mar", Path(tmp), args.seconds
            )
            print(name, json.dumps(out["models"][name]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"parse-{args.label}.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
