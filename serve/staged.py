"""`make serve` in stages: serve what is built at once, then each further model as it is trained.

A fresh clone has no trained model, and training all of them takes the better part of an hour on
2 cores. So TorchServe starts with the models whose `.mar` is up to date (none, in a fresh
clone), and every other model is trained and archived by its own make target
(`make model_store/<name>.mar`, the rule `make archive` uses), quickest first, and registered
through the management API as soon as its `.mar` is written. The README's curl example for a
model works from the moment its line says READY.

Before each build it prints what is serving, what is training and an estimate of the time left
per model: each model's `train_seconds` in its `archive.yaml` (a measured run on 2 idle cores),
scaled by how this machine kept to the estimates so far.
"""

import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Optional

import yaml

from serve.config import ROOT
from serve.server import Server
from train.core.registry import ModelSpec, specs

DEFAULT_ESTIMATE_S = 120.0  # a model whose archive.yaml has no train_seconds
TICK_S = 60.0  # how often the estimate is printed again while a model trains


def is_current(name: str, root: Path = ROOT) -> bool:
    """Whether model_store/<name>.mar is up to date for make (`make -q` exits 0)."""
    cmd = ["make", "-q", "--no-print-directory", f"model_store/{name}.mar"]
    return subprocess.run(cmd, cwd=root, capture_output=True).returncode == 0


def estimate(model: ModelSpec) -> float:
    """Seconds its training and archiving took on 2 idle cores (archive.yaml `train_seconds`)."""
    return float(model.raw.get("train_seconds", DEFAULT_ESTIMATE_S))


def build_order(pending: Sequence[ModelSpec]) -> list[ModelSpec]:
    """Quickest first, each after the models its training reads (`requires`)."""
    left = sorted(pending, key=lambda m: (estimate(m), m.name))
    names = {m.name for m in left}
    order: list[ModelSpec] = []
    while left:
        done = {m.name for m in order}
        ready = [m for m in left if all(r in done or r not in names for r in m.requires)]
        if not ready:
            raise ValueError(f"requires form a cycle: {[m.name for m in left]}")
        order.append(ready[0])
        left.remove(ready[0])
    return order


def min_workers(name: str, root: Path = ROOT) -> int:
    """The model-config's minWorkers: what `--models` at start would give the model."""
    config = yaml.safe_load((root / "model_archives" / name / "model-config.yaml").read_text())
    return int((config or {}).get("minWorkers", 1))


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def progress(serving: list[str], order: list[ModelSpec], pace: float, elapsed: float) -> str:
    """One status block: what is READY, what is training and when each next one should be."""
    lines = [f"serving {len(serving)}: {', '.join(serving) or 'nothing yet'}"]
    at = 0.0
    for i, model in enumerate(order):
        at += estimate(model) * pace
        left = max(at - (elapsed if i == 0 else 0.0), 0.0)
        if i == 0:
            lines.append(f"  training {model.name}: about {minutes(left)} left")
            at = left
        else:
            lines.append(f"  then {model.name}: READY in about {minutes(at)}")
    return "\n".join(lines)


def build(name: str, root: Path = ROOT) -> Path:
    """`make model_store/<name>.mar` (trains first when the artifact is missing); its output
    goes to logs/build/<name>.log, whose tail is printed when it fails."""
    log = root / "logs" / "build" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        cmd = ["make", "--no-print-directory", f"model_store/{name}.mar"]
        code = subprocess.run(cmd, cwd=root, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"make model_store/{name}.mar failed ({code}); {log}:\n{tail}")
    return log


def say_now(line: str) -> None:
    print(line, flush=True)  # make serve's output may be a pipe (CI, tee)


@contextmanager
def ticking(tick: Callable[[], None], every_s: float = TICK_S) -> Iterator[None]:
    """Calls `tick` every `every_s` seconds on a daemon thread while the block runs."""
    done = threading.Event()

    def loop() -> None:
        while not done.wait(every_s):
            tick()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def serve_in_stages(
    start_server: Callable[[list[str]], Server],
    on_ready: Callable[[Server, list[str]], None],
    root: Path = ROOT,
    models: Optional[Sequence[ModelSpec]] = None,
    say: Callable[[str], None] = say_now,
    running: Optional[Server] = None,
    current: Callable[[str], bool] = is_current,
    make: Callable[[str], Path] = build,
) -> Server:
    """Starts the server with the current .mar files, then builds and registers the rest.

    `start_server(names)` starts TorchServe loading those .mar files; `on_ready(server, names)`
    runs whenever the served set grows (the curl examples, the drift monitor). With a
    `running` server, what it serves stays as it is and the models it lacks are added.
    `current(name)` says whether a .mar is up to date and `make(name)` builds one, returning
    its log (make's rules; the e2e test archives tiny runs instead)."""
    models = list(specs() if models is None else models)
    t0 = time.monotonic()
    if running is not None:
        server, serving = running, [m.name for m in models if m.name in running.client().models()]
        say(f"TorchServe is already running with {', '.join(serving) or 'no model'}")
    else:
        serving = [m.name for m in models if current(m.name)]
        server = start_server(serving)
        say(f"TorchServe is up with {len(serving)} models READY ({time.monotonic() - t0:.0f} s)")
    order = build_order([m for m in models if m.name not in serving])
    if serving:
        on_ready(server, serving)
    pace, spent, planned = 1.0, 0.0, 0.0
    failed: dict[str, str] = {}
    while order:
        model = order[0]
        say(progress(serving, order, pace, 0.0))
        began = time.monotonic()
        tick = partial(progress, serving, order, pace)  # the loop's values of this round
        try:
            with ticking(lambda: say(tick(time.monotonic() - began))):  # noqa: B023 (joined)
                log = make(model.name)
            server.client().register(f"{model.name}.mar", min_workers(model.name, root))
        except RuntimeError as e:  # the others still get served; the run fails at the end
            say(f"FAILED {model.name}: {e}")
            failed[model.name] = str(e).splitlines()[0]
            order = [m for m in order[1:] if not set(m.requires) & set(failed)]
            continue
        took = time.monotonic() - began
        spent, planned = spent + took, planned + estimate(model)
        pace = spent / planned if planned else 1.0
        serving.append(model.name)
        order.pop(0)
        say(
            f"READY {model.name} after {minutes(took)} (estimate {minutes(estimate(model))}; "
            f"log {log}), {minutes(time.monotonic() - t0)} since the start"
        )
        on_ready(server, [model.name])
    if failed:
        skipped = sorted(m.name for m in models if m.name not in serving and m.name not in failed)
        reasons = "; ".join(f"{name}: {why}" for name, why in failed.items())
        raise SystemExit(
            f"serving {len(serving)} models; failed: {reasons}"
            + (f"; not built, they need a failed one: {', '.join(skipped)}" if skipped else "")
        )
    say(f"all {len(serving)} models READY, {minutes(time.monotonic() - t0)} after the start")
    return server
