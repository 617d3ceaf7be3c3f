"""Hyperparameter studies with Optuna, on the validation metric only.

    python -m train.tune mutag_gcn [--trials N]    (make tune MODEL=mutag_gcn)

A study is `configs/tune/<name>.yaml`: the experiment, the family's validation objective (a
function `(cfg, report) -> float` that never reads the test data), its direction, fixed Hydra
overrides (no logger, a scratch artifacts folder, a proxy budget) and the search space as Hydra
keys. Trial 0 is today's defaults, so the study measures its gain over them on the same
objective. The trials, the best parameters and that gain go to
benchmarks/results/tuning/<name>.json; docs/tuning.md reports them with the test score of the
adopted defaults, taken once.

Why not Hydra's Optuna sweeper: hydra-optuna-sweeper 1.2.0 requires optuna<3, and the 1.1.2 that
pip picks beside Optuna 5 pins alembic<1.7 (2021) and builds its search space from distributions
that Optuna deprecated in 3.0 and removes in 6.0. Its objective is also the task's return value,
and the training runners return test scores. So this is Optuna's own ask/tell loop over the
same Hydra compose API that training uses (train.core.registry).
"""

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import get_method
from omegaconf import OmegaConf

from train.core.registry import CONFIGS, ROOT, experiment_config

STUDIES = CONFIGS / "tune"
RESULTS = ROOT / "benchmarks" / "results" / "tuning"


def study_spec(name: str) -> dict[str, Any]:
    """configs/tune/<name>.yaml as a plain dict; KeyError names the studies there are."""
    path = STUDIES / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in STUDIES.glob("*.yaml"))
        raise KeyError(f"no study {name!r} in {STUDIES} (known: {known})")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(spec, dict)
    return spec


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One value per Hydra key of the search space, drawn by the trial."""
    values: dict[str, Any] = {}
    for key, dist in space.items():
        kind = dist["type"]
        if kind == "float":
            values[key] = trial.suggest_float(
                key, dist["low"], dist["high"], log=dist.get("log", False)
            )
        elif kind == "int":
            values[key] = trial.suggest_int(
                key, dist["low"], dist["high"], step=dist.get("step", 1)
            )
        elif kind == "categorical":
            values[key] = trial.suggest_categorical(key, dist["choices"])
        else:
            raise ValueError(f"{key}: unknown distribution type {kind!r}")
    return values


def defaults(experiment: str, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Today's value of every key of the search space, from the experiment's config.

    ValueError when one lies outside its distribution: Optuna would then draw trial 0 instead
    of running the defaults, and the study would measure no gain over them.
    """
    cfg = experiment_config(experiment)
    values = {key: OmegaConf.select(cfg, key, throw_on_missing=True) for key in space}
    for key, dist in space.items():
        v = values[key]
        inside = (
            v in dist["choices"]
            if dist["type"] == "categorical"
            else dist["low"] <= v <= dist["high"]
        )
        if not inside:
            raise ValueError(f"{experiment}: default {key}={v!r} is outside the study's {dist}")
    return values


def pruning_report(trial: optuna.Trial) -> Callable[[int, float], None]:
    """What an objective calls after each of its steps (a fold, an epoch): Optuna's median
    pruner stops a trial whose steps fall behind the finished trials'."""

    def report(step: int, value: float) -> None:
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()

    return report


def trial_config(spec: dict[str, Any], values: dict[str, Any], scratch: str, *extra: str) -> Any:
    """The experiment's config with the study's overrides, a scratch artifacts folder and the
    trial's values."""
    overrides = [*spec.get("overrides", []), f"paths.artifacts={scratch}", *extra]
    return experiment_config(
        spec["experiment"], *overrides, *(f"{k}={v}" for k, v in values.items())
    )


def recheck(spec: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Scores the defaults and the `recheck.top` best trials `recheck.repeats` more times
    (`+tune.repeat=k`: the objective's other parts and seeds, the same data held out) and
    chooses the best mean.

    On a noisy objective the best of many trials is partly luck (the winner's curse): on
    MUTAG, rounding the best trial's learning rate from 0.02761 to 0.0276 moved its score from
    0.876 to 0.840. The mean over repeats is what a new default is chosen by.
    """
    conf = spec.get("recheck")
    if not conf:
        return result
    objective = get_method(spec["objective"])
    sign = 1 if spec["direction"] == "maximize" else -1
    done = [t for t in result["trials"] if t["state"] == "complete"]
    top = sorted(done, key=lambda t: sign * t["value"], reverse=True)[: conf["top"]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tune-recheck-") as scratch:
        for t in [result["trials"][0], *(t for t in top if t["number"] != 0)]:
            values = [t["value"]]
            for k in range(1, conf["repeats"] + 1):
                cfg = trial_config(
                    spec, t["params"], f"{scratch}/{t['number']}-{k}", f"+tune.repeat={k}"
                )
                values.append(round(float(objective(cfg, lambda step, value: None)), 4))
            row = {"number": t["number"], "params": t["params"], "values": values}
            row["mean"] = round(statistics.mean(values), 4)
            rows.append(row)
            print(json.dumps({"recheck": row}), flush=True)
    chosen = max(rows, key=lambda r: sign * r["mean"])
    result["recheck"] = {"repeats": conf["repeats"], "top": conf["top"], "trials": rows}
    result["chosen"] = chosen
    result["gain_rechecked"] = round(sign * (chosen["mean"] - rows[0]["mean"]), 4)
    return result


def run_study(name: str, trials: int | None = None, out: Path = RESULTS) -> dict[str, Any]:
    """Runs the study, trial 0 at today's defaults; writes and returns its record."""
    spec = study_spec(name)
    n = trials or spec["trials"]
    objective = get_method(spec["objective"])
    study = optuna.create_study(
        study_name=name,
        direction=spec["direction"],
        sampler=optuna.samplers.TPESampler(seed=spec.get("seed", 0)),
        # An objective that reports once (after its only fit) gains nothing from pruning, and
        # a pruned trial's score would be lost: such a study sets `pruner: none`.
        pruner=optuna.pruners.NopPruner()
        if spec.get("pruner") == "none"
        else optuna.pruners.MedianPruner(n_startup_trials=spec.get("startup_trials", 4)),
    )
    start = defaults(spec["experiment"], spec["space"])
    study.enqueue_trial(start)
    records = []
    with tempfile.TemporaryDirectory(prefix=f"tune-{name}-") as scratch:
        for _ in range(n):
            trial = study.ask()
            values = suggest(trial, spec["space"])
            cfg = trial_config(spec, values, f"{scratch}/{trial.number}")
            began = time.perf_counter()
            try:
                value: float | None = round(float(objective(cfg, pruning_report(trial))), 4)
                study.tell(trial, value)
                state = "complete"
            except optuna.TrialPruned:
                value, state = None, "pruned"
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            records.append(
                {
                    "number": trial.number,
                    "state": state,
                    "value": value,
                    "params": values,
                    "steps": {  # step -> the objective's report (JSON keys are strings)
                        str(k): round(v, 4)
                        for k, v in study.trials[trial.number].intermediate_values.items()
                    },
                    "seconds": round(time.perf_counter() - began, 1),
                }
            )
            print(json.dumps(records[-1]), flush=True)
    default_value = records[0]["value"]
    best = study.best_trial
    sign = 1 if spec["direction"] == "maximize" else -1
    result = {
        "study": name,
        "experiment": spec["experiment"],
        "objective": spec["objective"],
        "metric": spec["metric"],
        "direction": spec["direction"],
        "overrides": spec.get("overrides", []),
        "space": spec["space"],
        "trials": records,
        "n_complete": sum(r["state"] == "complete" for r in records),
        "n_pruned": sum(r["state"] == "pruned" for r in records),
        "default": {"params": start, "value": default_value},
        "best": {"number": best.number, "params": best.params, "value": best.value},
        "gain": None if default_value is None else round(sign * (best.value - default_value), 4),
        "optuna": optuna.__version__,
    }
    return write(recheck(spec, result), out)


def write(result: dict[str, Any], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{result['study']}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m train.tune", description=__doc__.split("\n")[0]
    )
    parser.add_argument("study", help="configs/tune/<study>.yaml")
    parser.add_argument("--trials", type=int, help="default: the study's own count")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--recheck", action="store_true", help="only recheck the study already in --out"
    )
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.recheck:
        done = json.loads((args.out / f"{args.study}.json").read_text())
        result = write(recheck(study_spec(args.study), done), args.out)
    else:
        result = run_study(args.study, args.trials, args.out)
    keys = ("study", "default", "best", "gain", "chosen", "gain_rechecked")
    print(json.dumps({k: result.get(k) for k in keys}, indent=2))
    return result


if __name__ == "__main__":
    main()
