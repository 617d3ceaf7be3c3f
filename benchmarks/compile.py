"""`make bench-compile`: every model's compilation and quantization paths, side by side in one run.

For each model of model_store/ whose family can rebuild its eager module (`EAGER`), the same
trained weights (the artifact's state_dict.pt) run as (built by benchmarks/compile_forms.py):
- `eager`: the nn.Module under inference_mode;
- `torchscript`: the artifact's model.pt, which TorchServe serves today;
- `compile`: torch.compile (inductor, dynamic shapes), compile time recorded;
- `int8`: torch.ao dynamic quantization of every nn.Linear (weights int8, activations quantized
  per batch), with the share of eager CPU time that Linear layers take, which says whether it
  can pay;
- `aoti`: torch.export, then AOTInductor (`aoti_compile_and_package`), where it exports.

Each form is timed in-process on the model's real example request, collated by its own handler
(p50 at batch 1, throughput at the best batch of BATCHES), and scored on the held-out requests of
its `shifts` hook, sent through the packaged handler with the form in place of model.pt
(accuracy, or energy MAE in meV for QM9). A form that fails records its error.

Writes benchmarks/results/compile.json and benchmarks/results/compile.md. Needs the .mar files
(`make archive`). Usage: python -m benchmarks.compile [--models a b] [--seconds 2] [--size 200]
"""

import argparse
import json
import random
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Optional

import torch
from ts.context import RequestProcessor

from benchmarks.common import RESULTS, example, machine, rate, timed, write_result
from benchmarks.compile_forms import ARTIFACTS, build, max_abs_diff, rebuildable
from benchmarks.robustness import answer_all, score
from serve.config import ROOT
from serve.inprocess import load_service, unpack
from train.core.registry import experiment_config, spec
from train.core.shifts import load_hook

STORE = ROOT / "model_store"
BATCHES = (1, 4, 16, 64)
FORMS = ("eager", "torchscript", "compile", "int8", "aoti")


class Bench:
    """One .mar's handler in this process, its example collated at each batch size, and its
    held-out requests."""

    def __init__(self, name: str, workdir: Path, size: int, seed: int) -> None:
        self.name = name
        self.service = load_service(unpack(STORE / f"{name}.mar", workdir))
        self.handler = self.service._entry_point.__self__
        self.handler.payload_log = None  # the forms are scored, not monitored
        body, ctype = example(name)
        ctx = self.service.context  # preprocess reads each request's Content-Type from it
        ctx.request_processor = [RequestProcessor({"Content-Type": ctype})]
        self.handler.context = ctx  # as handle() sets it before preprocess
        [item] = [it for _, it in self.handler.preprocess([{"body": body}])["good"]]
        self.inputs = {b: self.handler.collate([item] * b) for b in BATCHES}
        self.scripted = self.handler.model
        hook = spec(name).shifts
        data_cfg = experiment_config(spec(name).experiment).data
        self.cases = load_hook(hook)(data_cfg, size, random.Random(f"{seed}:{hook}")).clean
        self.labels = json.loads((ARTIFACTS / name / "meta.json").read_text()).get("labels", [])

    def measure(self, model: Any, seconds: float) -> dict[str, Any]:
        out: dict[str, Any] = {"batches": {}}
        for b, inputs in self.inputs.items():
            with torch.inference_mode():
                lat = timed(lambda inputs=inputs: model(*inputs), seconds)
                diff = max_abs_diff(model(*inputs), self.scripted(*inputs))
            out["batches"][str(b)] = {**rate(lat, b), "max_abs_diff_vs_torchscript": diff}
        # A form that answers other shapes than TorchScript (an export specialised to the
        # example's sizes, run without a shape check) is timed on work it does not do.
        out["same_shapes_as_torchscript"] = all(
            v["max_abs_diff_vs_torchscript"] is not None for v in out["batches"].values()
        )
        best = max(out["batches"], key=lambda b: out["batches"][b]["per_s"])
        out.update(
            p50_ms_batch1=out["batches"]["1"]["p50_ms"],
            best_batch=int(best),
            best_batch_per_s=out["batches"][best]["per_s"],
        )
        return out

    def held_out(self, model: Any, metric: str) -> dict[str, Any]:
        """The held-out requests through the handler with `model` in place of model.pt."""
        self.handler.model = model
        try:
            answers = answer_all(self.service, self.cases)
        except Exception as e:  # the handler cannot use this form's output: timed, not scored
            return {"held_out_error": message(e)}
        finally:
            self.handler.model = self.scripted
        return score(answers, self.cases, metric, self.labels)


def message(e: BaseException) -> str:
    """The exception's type and first line (some, such as StopIteration, have no text)."""
    first = (str(e).splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def run_model(name: str, seconds: float, size: int, seed: int) -> dict[str, Any]:
    metric = "mae_mev" if name.startswith("qm9") else "accuracy"
    forms: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=f"compile-{name}-") as tmp:
        bench = Bench(name, Path(tmp), size, seed)
        for form in FORMS:
            try:
                # Exported on the batch-4 example: torch.export specialises a dimension of
                # size 1 (the batch of the batch-1 example) to a constant.
                example = bench.inputs[4] if form == "aoti" else bench.inputs[1]
                model, extra = build(form, name, Path(tmp), example)
                row = {**extra, **bench.measure(model, seconds), **bench.held_out(model, metric)}
                if hasattr(model, "packages"):  # aoti of a list input: one per list length
                    row["aoti_packages_for_list_lengths"] = sorted(model.packages)
            except Exception as e:  # a form that does not work here is a result, not a crash
                row = {"error": message(e)}
                traceback.print_exc()
            forms[form] = row
            print(
                f"{name} {form}: { {k: v for k, v in row.items() if k != 'batches'} }", flush=True
            )
    base = forms["torchscript"]
    for row in forms.values():
        if "error" not in row and "error" not in base:
            row["speedup_p50_vs_torchscript"] = round(
                base["p50_ms_batch1"] / row["p50_ms_batch1"], 2
            )
            row["throughput_vs_torchscript"] = round(
                row["best_batch_per_s"] / base["best_batch_per_s"], 2
            )
            if row.get(metric) is not None and base.get(metric) is not None:
                row[f"{metric}_change"] = round(row[metric] - base[metric], 4)
    return {"model": name, "metric": metric, "held_out_requests": size, "forms": forms}


def table(results: list[dict[str, Any]]) -> str:
    """compile.md: one row per model and form."""
    lines = [
        "| model | form | p50 batch 1 (ms) | best batch | per s at best "
        "| vs TorchScript p50 / thr. | metric | change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for form, row in r["forms"].items():
            if "error" in row:
                lines.append(f"| `{r['model']}` | {form} | failed: {row['error'][:80]} | | | | | |")
                continue
            m = r["metric"]
            held = f"not scored: {row['held_out_error'][:60]}" if "held_out_error" in row else ""
            if row.get("same_shapes_as_torchscript") is False:
                held = "answers other shapes than TorchScript: " + (held or "timing not comparable")
            lines.append(
                f"| `{r['model']}` | {form} | {row['p50_ms_batch1']:.3f} | {row['best_batch']} "
                f"| {row['best_batch_per_s']:,.0f} "
                f"| {row.get('speedup_p50_vs_torchscript', '')}× / "
                f"{row.get('throughput_vs_torchscript', '')}× | {held or f'{m} {row.get(m)}'} "
                f"| {row.get(f'{m}_change', '')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="default: every archived model with EAGER")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per batch size")
    parser.add_argument("--size", type=int, default=200, help="held-out requests per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other models' figures of the existing compile.json (each with its run)",
    )
    args = parser.parse_args(argv)
    models = args.models or [
        m for m in sorted(p.stem for p in STORE.glob("*.mar")) if rebuildable(m)
    ]
    given = argv if argv is not None else sys.argv[1:]
    record = {
        "command": ("python -m benchmarks.compile " + " ".join(given)).strip(),
        "machine": machine("torch"),
        "torch_threads": torch.get_num_threads(),
        "models": [],
    }
    if args.merge and (args.out / "compile.json").exists():
        earlier = json.loads((args.out / "compile.json").read_text())
        kept = [r for r in earlier["models"] if r["model"] not in models]
        for r in kept:  # each figure keeps the command and machine that measured it
            r.setdefault("run", {k: earlier[k] for k in ("command", "machine", "finished")})
        record["models"] = kept
    for m in models:  # written after each model: a later failure keeps the earlier figures
        try:
            record["models"].append(run_model(m, args.seconds, args.size, args.seed))
        except Exception as e:
            traceback.print_exc()
            record["models"].append({"model": m, "error": f"{type(e).__name__}: {e}"[:300]})
        write_result(record, args.out / "compile.json")
    record["models"].sort(key=lambda r: r["model"])
    write_result(record, args.out / "compile.json")
    done = [r for r in record["models"] if "forms" in r]
    (args.out / "compile.md").write_text(table(done))
    print(table(done))


if __name__ == "__main__":
    main()
