"""Load test of the served models: one FastHttpUser per model, named after it.

A black box: it knows the HTTP contract (POST /predictions/<model>, `Authorization: Bearer`, the
Vertex AI `{"instances": [...]}` envelope answered by `{"predictions": [...]}`) and the payload
pool that `python -m train.core.pools` writes from the data (loadtests/pool/), nothing else.
The user classes come from the pool's index.json, which `make pools` writes for every model of
the registry: a new model gets its Locust user with its pool, and no class is written by hand.

    locust -f loadtests/locustfile.py --headless -u 8 -r 8 -t 60s --host http://127.0.0.1:8080
    locust -f loadtests/locustfile.py <model> ...                   # one model alone
    locust -f loadtests/locustfile.py,loadtests/step_shape.py ...  # the step shape
    locust -f loadtests/locustfile.py ... --rate 50                 # constant rate (requests/s)

Every option (token, weights, thresholds, Vertex, distributed mode) is in docs/loadtests.md.
"""

import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, events, task
from locust.runners import WorkerRunner
from run_summary import RUN, per_model  # flat: Locust puts this folder on sys.path

POOL = Path(__file__).resolve().parent / "pool"

log = logging.getLogger("loadtest")


class ModelUser(FastHttpUser):
    """Posts random requests from its model's pool to /predictions/<class name>, back to back
    (closed loop) or paced to `--rate` requests/s shared by all users."""

    abstract = True
    network_timeout = 120.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.model = type(self).__name__
        self.pool = load_pool(opts.pool, self.model)
        self.path = opts.path_template.format(model=self.model)
        self.auth = {"Authorization": f"Bearer {opts.token}"} if opts.token else {}
        self.vertex, self.instances = opts.vertex, max(1, opts.instances)
        self.rate = opts.rate
        self._due = time.monotonic()

    def wait_time(self) -> float:
        """0 in the closed loop; with --rate, each user's share of the total rate."""
        if self.rate <= 0:
            return 0.0
        users = max(1, getattr(self.environment.runner, "target_user_count", 1) or 1)
        now = time.monotonic()
        # A late request starts at once but is not made up for: under overload the achieved
        # rate drops below --rate instead of bursting (the summary shows the achieved rps).
        self._due = max(now, self._due + users / self.rate)
        return self._due - now

    def request_body(self) -> tuple[bytes, str, int]:
        """(body, Content-Type, number of instances) for one request from the pool."""
        if not self.vertex:
            body, ctype, _ = random.choice(self.pool)
            return body, ctype, 1
        picks = [random.choice(self.pool)[2] for _ in range(self.instances)]
        return b'{"instances":[' + b",".join(picks) + b"]}", "application/json", len(picks)

    @task
    def predict(self) -> None:
        body, ctype, n = self.request_body()
        headers = {"Content-Type": ctype, **self.auth}
        with self.client.post(
            self.path, data=body, headers=headers, name=self.model, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                answer = json.loads(resp.content)
            except ValueError:
                resp.failure("200 with a body that is not JSON")
                return
            if self.vertex:
                predictions = answer.get("predictions") if isinstance(answer, dict) else None
                if not isinstance(predictions, list) or len(predictions) != n:
                    resp.failure(f"{n} instances but no list of {n} predictions")
                    return
            batch = (resp.headers or {}).get("X-Batch-Size")
            if batch and batch.isdigit():
                RUN.batch(self.model, int(batch))


_pools: dict[str, list[tuple[bytes, str, bytes]]] = {}


def pool_index(folder: str) -> dict[str, Any]:
    path = Path(folder) / "index.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load_pool(folder: str, model: str) -> list[tuple[bytes, str, bytes]]:
    """(body, Content-Type, Vertex instance JSON) per request of a model's pool, read once."""
    if model not in _pools:
        entry = pool_index(folder).get(model)
        if not entry:
            raise RuntimeError(f"no payload pool for {model} in {folder}: run `make pools`")
        root = Path(folder)
        _pools[model] = [
            (
                (root / p["file"]).read_bytes(),
                p["content_type"],
                (root / p.get("instance", p["file"])).read_bytes(),
            )
            for p in entry["payloads"]
        ]
    return _pools[model]


def pool_folder(argv: list[str], environ: dict[str, str] | os._Environ) -> str:
    """The pool folder Locust will be given: --pool, else LOADTEST_POOL, else loadtests/pool.

    Read from the command line before Locust parses it, because the user classes must exist
    when Locust imports this file (its options are parsed after that).
    """
    for i, arg in enumerate(argv):
        if arg == "--pool" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--pool="):
            return arg.split("=", 1)[1]
    return environ.get("LOADTEST_POOL") or str(POOL)


def user_classes(index: dict[str, Any]) -> dict[str, type]:
    """One ModelUser subclass per model of a pool index; the class name is the model name
    (and its URL and .mar)."""
    return {
        name: type(name, (ModelUser,), {"__doc__": f"{name}'s pool", "__module__": __name__})
        for name in sorted(index)
    }


globals().update(user_classes(pool_index(pool_folder(sys.argv, os.environ))))


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument(
        "--token",
        env_var="LOADTEST_TOKEN",
        default="",
        is_secret=True,
        help="sent as Authorization: Bearer <token> when set",
    )
    parser.add_argument("--pool", env_var="LOADTEST_POOL", default=str(POOL), help="pool folder")
    parser.add_argument("--weights", default="", help="per-class weights, e.g. <model>=3,<other>=1")
    parser.add_argument(
        "--vertex", action="store_true", help='send the Vertex AI {"instances": [...]} envelope'
    )
    parser.add_argument("--instances", type=int, default=1, help="instances per Vertex request")
    parser.add_argument(
        "--path-template",
        default="/predictions/{model}",
        help="request path; {model} is the class name (e.g. a Vertex endpoint's :predict path)",
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="constant-rate mode: requests/s for all users"
    )
    parser.add_argument(
        "--max-fail-ratio", default="0.01", help="threshold, e.g. 0.01 or 0.01,<model>=0"
    )
    parser.add_argument("--max-p95-ms", default="", help="threshold, e.g. 500,<model>=50")
    parser.add_argument("--max-p99-ms", default="", help="threshold, e.g. 1000")
    parser.add_argument("--summary-json", default="", help="write the machine-readable summary")


@events.init.add_listener
def select_classes(environment: Any, **_: Any) -> None:
    """Applies --weights; drops classes whose model has no pool unless named explicitly."""
    opts = environment.parsed_options
    if opts is None:
        return
    RUN.reset_with_stats = bool(environment.reset_stats)
    _, weights = per_model(opts.weights, int)
    for cls in environment.user_classes:
        cls.weight = weights.get(cls.__name__, cls.weight)
    if isinstance(environment.runner, WorkerRunner):
        return  # the master decides which classes run
    index, named = pool_index(opts.pool), set(opts.user_classes or [])
    keep = []
    for cls in environment.user_classes:
        name = cls.__name__
        if name not in index:
            if name in named:
                sys.exit(f"no payload pool for {name} in {opts.pool}: run `make pools`")
            log.warning("skipping %s: no payload pool in %s", name, opts.pool)
        elif cls.weight > 0 or cls.fixed_count > 0:
            keep.append(cls)
    if not keep:
        sys.exit(f"no user class to run: no pool in {opts.pool} or every weight is 0")
    environment.user_classes[:] = keep
