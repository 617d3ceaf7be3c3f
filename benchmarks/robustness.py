"""`make robustness`: every served model on held-out data under controlled shifts, and how often
the drift monitor flags each.

For each model of model_store/ whose archive.yaml names a `shifts` hook (train/core/shifts.py):
- the hook gives `--size` labelled held-out requests, clean and under each shift at 3
  severities;
- every request goes through the packaged handler in this process (serve/inprocess.py: the
  worker's loader and the handler's own `handle`), which scores the answers (accuracy, or MAE in
  meV for QM9) and writes the handler's real payload log;
- `--windows` windows of `--window` records are drawn from each condition's payload records and
  tested against the .mar's reference profile with the monitor's own DriftDetector (the
  service's alpha and permutations). The flag rate on clean held-out windows is the false-alarm
  rate; on shifted windows it is the detection rate.

Writes benchmarks/results/robustness.json, docs/robustness.md (a table per model) and
docs/img/robustness-<family>.png. Needs the trained artifacts and .mar files (`make archive`).
Usage: python -m benchmarks.robustness [--models a b] [--size N] [--window W] [--windows R]
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import write_result
from benchmarks.robustness_report import OUT, plot, write_doc
from monitor.drift import DriftDetector, flagged
from monitor.reference import Reference
from monitor.service import Settings
from serve.config import ROOT
from serve.inprocess import handle, load_service, unpack
from train.core.registry import experiment_config, spec
from train.core.shifts import Case, ShiftSet, load_hook, shift_hooks

STORE = ROOT / "model_store"
MIN_WINDOW = 20  # DriftDetector's min_samples: a smaller window tests nothing
BATCH = 8  # requests per handler batch, as a TorchServe batch of batch_size 8


class Evaluator:
    """One .mar loaded in-process with a payload log that keeps every record."""

    def __init__(self, mar: Path, tmp: Path) -> None:
        service = load_service(unpack(mar, tmp))
        self.handler = service._entry_point.__self__  # the handler instance TsModelLoader built
        self.service = service
        sys.path.insert(0, str(tmp / mar.stem))
        import payload_log  # the .mar's own module, importable once its folder is on sys.path

        version = str(service.context.manifest["model"].get("modelVersion") or "")
        self.log = payload_log.PayloadLog(
            tmp / "payloads", mar.stem, version, 1.0, 2**31, 1, queue_size=2**16
        )
        self.handler.payload_log = self.log
        self.read = 0

    def run(self, cases: list[Case]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every case's answer (JSON), and the payload records the handler logged for them."""
        answers = answer_all(self.service, cases)
        self.log.flush(timeout=600)
        lines = self.log.path.read_text().splitlines()
        records = [json.loads(line) for line in lines[self.read :]]
        self.read = len(lines)
        return answers, records


def answer_all(service: Any, cases: list[Case]) -> list[dict[str, Any]]:
    """Every case through the loaded handler in batches of BATCH: its JSON answer, or
    {"status": code} for one that was not 200."""
    answers = []
    for i in range(0, len(cases), BATCH):
        chunk = cases[i : i + BATCH]
        out = handle(
            service,
            [{"body": c.body} for c in chunk],
            [{"Content-Type": c.content_type} for c in chunk],
        )
        for status, text, _ in out:
            answers.append(json.loads(text) if status == 200 else {"status": status})
    return answers


def label_of(answer: dict[str, Any]) -> Optional[str]:
    if "predictions" in answer:  # a node request: the node asked for
        return answer["predictions"][0]["label"]
    return answer.get("label")


def score(answers: list[dict], cases: list[Case], metric: str, labels: list[str]) -> dict:
    """Accuracy (with the share of answers that were not 200) or MAE in meV over scored cases."""
    pairs = [(a, c.target) for a, c in zip(answers, cases) if c.target is not None]
    failed = sum(1 for a, _ in pairs if "status" in a)
    ok = [(a, t) for a, t in pairs if "status" not in a]
    if metric == "mae_mev":
        err = [abs(a["energy"] - t) * 1000.0 for a, t in ok]
        value = sum(err) / len(err) if err else None
    else:
        hits = [label_of(a) == labels[t] for a, t in ok]
        value = sum(hits) / len(pairs) if pairs else None  # a failed request counts as wrong
    statuses = sorted({a["status"] for a, _ in pairs if "status" in a})
    return {
        metric: None if value is None else round(value, 4),
        "scored": len(pairs),
        "failed": failed,
        "failed_statuses": statuses,
    }


def flag_rate(
    detector: DriftDetector, records: list[dict], window: int, windows: int, seed: int
) -> dict[str, Any]:
    """Share of `windows` random windows (without replacement within one) that are flagged,
    and which signals fired how often."""
    rng = random.Random(seed)
    w = min(window, len(records))
    hits, fired = 0, {}
    for _ in range(windows):
        signals = detector.check(rng.sample(records, w))
        hits += flagged(signals)
        for s in signals:
            fired[s.name] = fired.get(s.name, 0) + s.drifted
    return {"window": w, "windows": windows, "flagged": round(hits / windows, 4), "signals": fired}


def evaluate(
    name: str, shift_set: ShiftSet, mar: Path, window: int, windows: int, seed: int
) -> dict[str, Any]:
    settings = Settings()
    ref = Reference.load(mar)
    detector = DriftDetector(ref, alpha=settings.alpha, n_perm=settings.n_perm)
    labels = ref.labels or []
    with tempfile.TemporaryDirectory() as tmp:
        ev = Evaluator(mar, Path(tmp))
        t0 = time.monotonic()
        answers, records = ev.run(shift_set.clean)
        clean = {
            **score(answers, shift_set.clean, shift_set.metric, labels),
            **flag_rate(detector, records, window, windows, seed),
        }
        print(f"{name} clean: {clean}", flush=True)
        rows = []
        for shift_name, shift in shift_set.shifts.items():
            for level, severity in enumerate(shift.severities):
                cases = shift.make(severity)
                answers, records = ev.run(cases)
                row = {
                    "shift": shift_name,
                    "severity": severity,
                    "unit": shift.unit,
                    "level": level + 1,
                    "invariant": shift.invariant,
                    "requests": len(cases),
                    **score(answers, cases, shift_set.metric, labels),
                    **flag_rate(detector, records, window, windows, seed + level + 1),
                }
                print(f"{name} {shift_name}@{severity}: {row}", flush=True)
                rows.append(row)
    return {
        "model": name,
        "metric": shift_set.metric,
        "requests": len(shift_set.clean),
        "reference_records": int(ref.meta.get("records", 0)),
        "clean": clean,
        "shifts": rows,
        "seconds": round(time.monotonic() - t0, 1),
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="default: every model of --store with a hook")
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--size", type=int, default=300, help="held-out requests per condition")
    parser.add_argument("--window", type=int, default=Settings().window)
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-doc", action="store_true", help="write only the results file")
    parser.add_argument(
        "--update",
        action="store_true",
        help="rerun only --models and keep --out's other models (each model's figures depend "
        "on its own .mar and seed only, so the merged file is what one full run writes)",
    )
    args = parser.parse_args(argv)
    hooks = shift_hooks()
    models = args.models or sorted(m for m in hooks if (args.store / f"{m}.mar").is_file())
    results: dict[str, Any] = {"models": [], "families": {}}
    for name in models:
        hook = hooks[name]
        family = hook.rsplit(".", 1)[-1].removesuffix("_shifts")
        results["families"].setdefault(family, []).append(name)
        data_cfg = experiment_config(spec(name).experiment).data
        # One seed per hook: models of one task see the same held-out requests.
        shift_set = load_hook(hook)(data_cfg, args.size, random.Random(f"{args.seed}:{hook}"))
        # Windows of at most half the pool, so that two windows are not the same records, but
        # never below the detector's floor (MUTAG has 38 molecules training never fitted).
        window = min(args.window, max(len(shift_set.clean) // 2, MIN_WINDOW))
        mar = args.store / f"{name}.mar"
        results["models"].append(evaluate(name, shift_set, mar, window, args.windows, args.seed))
    given = argv if argv is not None else sys.argv[1:]
    command = "python -m benchmarks.robustness " + " ".join(given)
    results["command"] = command.strip()
    if args.update and args.out.exists():
        old = json.loads(args.out.read_text())
        rerun = {r["model"] for r in results["models"]}
        results["models"] = sorted(
            [r for r in old["models"] if r["model"] not in rerun] + results["models"],
            key=lambda r: r["model"],
        )
        results["families"] = {}
        for r in results["models"]:
            family = hooks[r["model"]].rsplit(".", 1)[-1].removesuffix("_shifts")
            results["families"].setdefault(family, []).append(r["model"])
        # One full run with the same settings writes the merged file: record that command, and
        # the runs that made it.
        full = ["python -m benchmarks.robustness"]
        for name in ("store", "size", "window", "windows", "seed"):
            if getattr(args, name) != parser.get_default(name):
                full.append(f"--{name} {getattr(args, name)}")
        results["command"] = " ".join(full)
        results["runs"] = [*old.get("runs", [old.get("command")]), command.strip()]
    write_result(results, args.out)
    if not args.no_doc:
        write_doc(results, results["command"])
        plot(results)


if __name__ == "__main__":
    main()
