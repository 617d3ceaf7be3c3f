"""A torch.profiler trace of one model's training steps: `python -m train.profile_train NAME`
(`make profile-train MODEL=NAME`).

It runs the model's own training (its experiment config, the real model and batch size) on the
cut of the data that its archive.yaml's `profile` overrides name, records a few steps
(train.core.stepprofile.StepProfiler), then lets the run finish into a scratch folder. The top ops
go to benchmarks/results/train_profile/NAME.json, which docs/training.md quotes; the Chrome trace
to logs/profile/NAME/trace.json (open it in https://ui.perfetto.dev).
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hydra.utils import get_method

from train.core.registry import ROOT, experiment_config, spec

RESULTS = ROOT / "benchmarks" / "results" / "train_profile"
TRACES = ROOT / "logs" / "profile"


def profile_training(name: str, *overrides: str, wait: int = 2, active: int = 5) -> dict[str, Any]:
    """Profiles `active` training steps of `name` after `wait` (+1 warm-up); returns top ops."""
    model = spec(name)
    trace_dir = TRACES / name
    shutil.rmtree(trace_dir, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"profile-{name}-") as scratch:
        cfg = experiment_config(
            model.experiment,
            "logger=none",
            "trainer.enable_progress_bar=false",
            f"paths.artifacts={scratch}",
            f"+profile.out={trace_dir}",
            f"+profile.wait={wait}",
            f"+profile.active={active}",
            f"++trainer.max_steps={wait + active + 2}",
            # No validation inside the profiled window: Cora's epoch is one step.
            "++trainer.check_val_every_n_epoch=100000",
            *model.raw.get("profile", []),
            *overrides,
        )
        get_method(cfg.runner)(cfg)
    top = trace_dir / "top_ops.json"
    if not top.is_file():
        raise RuntimeError(f"{name}: the fit ended before {wait + 1 + active} training steps")
    result = json.loads(top.read_text())
    result["overrides"] = [*model.raw.get("profile", []), *overrides]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m train.profile_train")
    parser.add_argument("model", help="a served model with a training run (not imdb_bert_int8)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = profile_training(args.model, *args.overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.model}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.model}: {result['step_ms']} ms per step, {result['threads']} threads")
    for op in result["top"][:10]:
        print(f"  {op['share']:6.1%}  {op['self_cpu_ms_per_step']:8.2f} ms  {op['op']}")
    return result


if __name__ == "__main__":
    main()
