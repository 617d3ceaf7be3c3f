"""What Locust's own stats lack, and the thresholds: exact latencies, the mean X-Batch-Size, the
load generator's CPU, and the summary JSON that `--summary-json` writes (loadtests/locustfile.py
registers the options; Locust puts this folder on sys.path, so it imports this module flat)."""

import json
import logging
import resource
import time
from array import array
from pathlib import Path
from typing import Any, Optional

from locust import events
from locust.runners import MasterRunner, WorkerRunner

log = logging.getLogger("loadtest")


def per_model(spec: str, cast: type = float) -> tuple[Optional[Any], dict[str, Any]]:
    """'0.01' or '500,<model>=50' -> (default, {model: value}); '' -> (None, {})."""
    default, overrides = None, {}
    for part in filter(None, (s.strip() for s in (spec or "").split(","))):
        if "=" in part:
            name, value = part.split("=", 1)
            overrides[name.strip()] = cast(value)
        else:
            default = cast(part)
    return default, overrides


class Run:
    """What Locust's own stats lack: exact latencies, X-Batch-Size, the load generator's CPU."""

    def __init__(self) -> None:
        self.reset_with_stats = False
        self.reset()

    def reset(self) -> None:
        self.times: dict[str, array] = {}
        self.batches: dict[str, list[int]] = {}
        self.wall0 = time.monotonic()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu0 = usage.ru_utime + usage.ru_stime

    def request(self, name: str, response_time: float) -> None:
        self.times.setdefault(name, array("d")).append(response_time)

    def batch(self, name: str, size: int) -> None:
        counts = self.batches.setdefault(name, [0, 0])
        counts[0] += 1
        counts[1] += size

    def exact(self, name: str) -> dict[str, float]:
        values = sorted(self.times.get(name, []))
        if not values:
            return {}
        pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
        return {f"p{int(q * 100)}_ms": round(pick(q), 3) for q in (0.5, 0.95, 0.99)}

    def loadgen(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - self.wall0
        cpu = usage.ru_utime + usage.ru_stime - self.cpu0
        return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "cores": round(cpu / wall, 3)}


RUN = Run()


@events.test_start.add_listener
def on_test_start(**_: Any) -> None:
    RUN.reset()


@events.spawning_complete.add_listener
def on_spawned(**_: Any) -> None:
    # --reset-stats: Locust drops the ramp-up from its stats here; so do we.
    if RUN.reset_with_stats:
        RUN.reset()


@events.request.add_listener
def on_request(name: str, response_time: float, exception: Any, **_: Any) -> None:
    if exception is None:
        RUN.request(name, response_time)


def summary(environment: Any) -> dict[str, Any]:
    """Per endpoint: counts, rps, Locust's percentiles, exact ones, batch size; thresholds."""
    opts = environment.parsed_options
    fail_default, fail_over = per_model(opts.max_fail_ratio)
    p95_default, p95_over = per_model(opts.max_p95_ms)
    p99_default, p99_over = per_model(opts.max_p99_ms)
    endpoints, violations = {}, []
    for cls in environment.user_classes:
        name = cls.__name__
        s = environment.stats.get(name, "POST")
        row = {
            "requests": s.num_requests,
            "failures": s.num_failures,
            "fail_ratio": round(s.fail_ratio, 6),
            "rps": round(s.total_rps, 3),
            "mean_ms": round(s.avg_response_time, 3),
            "p50_ms": s.get_response_time_percentile(0.5),
            "p95_ms": s.get_response_time_percentile(0.95),
            "p99_ms": s.get_response_time_percentile(0.99),
            "max_ms": round(s.max_response_time or 0, 3),
            "exact": RUN.exact(name),
        }
        done, total = RUN.batches.get(name, [0, 0])
        row["batch_size_mean"] = round(total / done, 3) if done else None
        limits = {
            "max_fail_ratio": fail_over.get(name, fail_default),
            "max_p95_ms": p95_over.get(name, p95_default),
            "max_p99_ms": p99_over.get(name, p99_default),
        }
        row["limits"] = limits
        if s.num_requests == 0:
            violations.append(f"{name}: no requests were made")
        checks = [
            ("fail_ratio", row["fail_ratio"], limits["max_fail_ratio"]),
            ("p95_ms", row["p95_ms"], limits["max_p95_ms"]),
            ("p99_ms", row["p99_ms"], limits["max_p99_ms"]),
        ]
        for what, value, limit in checks:
            if limit is not None and s.num_requests and value > limit:
                violations.append(f"{name}: {what} {value} > {limit}")
        endpoints[name] = row
    return {
        "host": environment.host,
        "vertex": bool(opts.vertex),
        "rate": opts.rate or None,
        "users": getattr(environment.runner, "target_user_count", None),
        # With --processes/--master the workers' exact latencies, batch sizes and CPU stay in
        # the workers: "exact" and "batch_size_mean" are empty and "loadgen" is the master's.
        "distributed": isinstance(environment.runner, MasterRunner),
        "loadgen": RUN.loadgen(),
        "endpoints": endpoints,
        "violations": violations,
        "passed": not violations,
    }


@events.quitting.add_listener
def check_thresholds(environment: Any, **_: Any) -> None:
    """Writes --summary-json and exits non-zero when a threshold is missed."""
    if environment.parsed_options is None or isinstance(environment.runner, WorkerRunner):
        return
    result = summary(environment)
    if environment.parsed_options.summary_json:
        path = Path(environment.parsed_options.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    for line in result["violations"]:
        log.error("THRESHOLD MISSED %s", line)
    if result["violations"]:
        environment.process_exit_code = 1
    else:
        log.info("thresholds met for %s", ", ".join(result["endpoints"]))
