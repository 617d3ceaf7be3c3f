"""`make profile`: Locust concurrency sweeps per model and server setting, with TorchServe's own
time split and the in-process scripted-model throughput measured in the same run.

For each setting (SETTINGS: torch threads, batch size and delay, workers per model), a
torchserve on free ports (serve.server.start) serves the models; per model, Locust
(loadtests/locustfile.py, the same file `make loadtest` runs) drives 1, 2, 4, ... users in a
closed loop with the real payload pool, one run per user count. During each run /metrics is
scraped (queue and inference latency counters, HandlerTime/PredictionTime gauges) and the CPU
time of the server's processes and of the load generator is read from /proc. Two more runs per
model and setting send only the example request of examples/ (1 and the most users), the same
request `benchmarks.latency.in_process` times in-process at batch 1 .. 32, so P1 and P2 compare
like with like.

Writes benchmarks/results/profile.json (everything measured), benchmarks/results/report.md and
benchmarks/results/plots/*.png; raw Locust output goes to benchmarks/runs/ (not committed).
Usage: python -m benchmarks.profile [--models a b] [--settings s t] [--users 1 2 4]
       [--seconds 6] [--report-only]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import RESULTS, example_index, machine, mar_config, memory_gib
from benchmarks.profile.locust import read_run, run_locust
from benchmarks.profile.merge import merge
from benchmarks.profile.metrics import LogTail, Sampler, group_cpu_s, machine_cpu_s
from benchmarks.profile.report import report
from benchmarks.profile.settings import DEFAULT_SETTINGS, QUIET_LOG4J2, SETTINGS, Setting
from serve.config import ROOT
from serve.metrics import BACKEND_US, QUEUE_US, REQUESTS, per_model, scrape
from serve.server import Server, model_names, start

RUNS = ROOT / "benchmarks" / "runs"
PLOTS = RESULTS / "plots"
REPORT = RESULTS / "report.md"
SUMMARY = RESULTS / "profile.json"
POOL = ROOT / "loadtests" / "pool"
USERS = (1, 2, 4, 8, 16, 32)
SECONDS = 6.0
COMMAND = "make profile"


def apply(server: Server, name: str, setting: Setting, committed: dict[str, Any]) -> dict:
    """Registers the model with the setting's batching and scales its workers; returns them."""
    mgmt = server.client()
    want_batch = setting.batch_size or committed.get("batchSize", 1)
    want_delay = (
        setting.max_batch_delay
        if setting.max_batch_delay is not None
        else committed.get("maxBatchDelay", 100)
    )
    want_workers = setting.workers or committed.get("minWorkers", 1)
    now = mgmt.describe(name)
    if (now["batchSize"], now["maxBatchDelay"]) != (want_batch, want_delay):
        mgmt.unregister(name)
        mgmt.register(
            f"{name}.mar", model_name=name, batch_size=want_batch, max_batch_delay=want_delay
        )
    mgmt.scale(name, want_workers)
    now = mgmt.describe(name)
    ready = [w for w in now["workers"] if w["status"] == "READY"]
    if len(ready) != want_workers:
        raise RuntimeError(f"{name}: {len(ready)} of {want_workers} workers READY")
    return {
        "batch_size": now["batchSize"],
        "max_batch_delay": now["maxBatchDelay"],
        "workers": len(ready),
    }


def measured_run(
    server: Server, name: str, users: int, seconds: float, pool: Path, prefix: Path
) -> dict[str, Any]:
    """One Locust run with TorchServe's counters, sampled gauges and CPU time around it."""
    assert server.proc is not None, "the profile measures a server it started"
    tok = server.token() or ""
    before = per_model(scrape(server.metrics), name)
    cpu0, (busy0, total0) = group_cpu_s(server.proc.pid), machine_cpu_s()
    with (
        Sampler(server.metrics, name) as sampler,
        LogTail(server.log_dir / "ts_log.log", name) as tail,
    ):
        done = run_locust(server.inference, tok, name, users, seconds, pool, prefix)
    cpu1, (busy1, total1) = group_cpu_s(server.proc.pid), machine_cpu_s()
    after = per_model(scrape(server.metrics), name)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"locust {name} u={users}: rc={done.returncode}\n{done.stderr[-2000:]}")
    row = read_run(prefix, name)
    row["users"] = users
    n = after.get(REQUESTS, 0) - before.get(REQUESTS, 0)
    if n > 0:
        for key, counter in (("ts_ms", BACKEND_US), ("queue_ms", QUEUE_US)):
            row[key] = round((after[counter] - before.get(counter, 0)) / n / 1000, 3)
    # Every batch's handler time from the log; the /metrics gauge sampled 4 times a second
    # (the last batch's value at each scrape) is kept as a cross-check.
    row["handler_ms"] = tail.mean("HandlerTime") or sampler.mean("HandlerTime")
    row["prediction_ms"] = tail.mean("PredictionTime") or sampler.mean("PredictionTime")
    row["handler_gauge_ms"] = sampler.mean("HandlerTime")
    row["batches"] = len(tail.values["HandlerTime"]) or None
    wall = max(total1 - total0, 1e-9) / (os.cpu_count() or 1)
    row["server_cores"] = round((cpu1 - cpu0) / wall, 3)
    row["machine_busy_cores"] = round((busy1 - busy0) / wall, 3)
    return row


def example_pool(folder: Path, names: list[str]) -> Path:
    """A pool holding only each model's examples/ request (the one timed in-process)."""
    index = example_index()
    out = {}
    for name in names:
        src = ROOT / "examples" / index[name]["file"]
        (folder / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / name / src.name)
        entry = {"file": f"{name}/{src.name}", "content_type": index[name]["content_type"]}
        out[name] = {"payloads": [entry]}
    (folder / "index.json").write_text(json.dumps(out))
    return folder


def in_process_all(names: list[str], store: Path, seconds: float) -> dict[str, Any]:
    """benchmarks.latency.in_process for each model, with torch's default threads and with 1."""
    import torch

    from benchmarks.latency import in_process

    out: dict[str, Any] = {}
    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out[name] = {}
            for threads in sorted({default_threads, 1}, reverse=True):
                torch.set_num_threads(threads)
                work = Path(tmp) / f"{name}_{threads}"
                work.mkdir()
                out[name][str(threads)] = in_process(name, store / f"{name}.mar", work, seconds)
                print(f"in-process {name} threads={threads}: {out[name][str(threads)]}")
    torch.set_num_threads(default_threads)
    return out


def start_setting(setting: Setting, store: Path, work: Path) -> tuple[Server, dict[str, Any]]:
    """A torchserve with every .mar of the store, as `make serve` starts them, under the
    setting's environment and log config, and how long it took until all were READY (P3)."""
    work.mkdir(parents=True)
    config = ROOT / "config.properties"
    if setting.quiet_log:
        config = work / "ts.properties"
        vmargs = f"vmargs=-Dlog4j.configurationFile=file://{QUIET_LOG4J2}"
        config.write_text((ROOT / "config.properties").read_text().rstrip("\n") + f"\n{vmargs}\n")
    models = model_names(store)
    started = time.perf_counter()
    server = start(store, work, models, artifacts=store, config=config, env=setting.env)
    return server, {"seconds": round(time.perf_counter() - started, 2), "models": models}


def sweep(
    result: dict[str, Any],
    server: Server,
    name: str,
    setting: Setting,
    committed: dict[str, Any],
    users: list[int],
    seconds: float,
    pool: Path,
    examples: Path,
    out: Path,
) -> None:
    """All runs of one model under one setting, appended to result["runs"]."""
    applied = apply(server, name, setting, committed)
    # Warm-up on the real pool: the first calls with each new input shape are slow.
    tok = server.token() or ""
    run_locust(server.inference, tok, name, 4, min(seconds, 5), pool, out / "warmup")
    for kind, pool_dir, levels in (
        ("pool", pool, users),
        ("example", examples, sorted({users[0], users[-1]})),
    ):
        for u in levels:
            row = measured_run(server, name, u, seconds, pool_dir, out / f"{kind}_u{u}")
            row.update(model=name, setting=setting.name, payloads=kind, **applied)
            result["runs"].append(row)
            print(
                f"[{setting.name}] {name} {kind} u={u}: {row['rps']:.1f} rps, p50 "
                f"{row['p50_ms']} p95 {row['p95_ms']} p99 {row['p99_ms']} ms, fails "
                f"{row['failures']}, batch {row['batch_size_mean']}, cores: server "
                f"{row['server_cores']} locust {row['loadgen_cores']}"
            )


def profile(
    names: list[str],
    settings: list[Setting],
    users: list[int],
    seconds: float,
    store: Path,
    pool: Path,
    runs: Path,
) -> dict[str, Any]:
    """Measures everything; returns the dict that profile.json holds."""
    result: dict[str, Any] = {
        "command": COMMAND,
        "argv": " ".join(["python -m benchmarks.profile", *sys.argv[1:]]),
        "machine": {**machine("torchserve", "locust"), "memory_gib": memory_gib()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
        "users": users,
        "seconds_per_run": seconds,
        "settings": [asdict(s) for s in settings],
        "in_process": in_process_all(names, store, max(1.0, seconds / 4)),
        "ready": {},
        "runs": [],
    }
    committed = {n: mar_config(store / f"{n}.mar") for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        examples = example_pool(Path(tmp) / "examples", names)
        server: Optional[Server] = None
        try:
            for i, setting in enumerate(settings):
                if i == 0 or setting.server() != settings[i - 1].server():
                    if server is not None:
                        server.stop()
                    server, ready = start_setting(setting, store, Path(tmp) / f"ts{i}")
                    result["ready"][setting.name] = ready
                    print(f"[{setting.name}] every model READY after {ready['seconds']} s")
                for name in filter(setting.applies, names):
                    out = runs / setting.name / name
                    shutil.rmtree(out, ignore_errors=True)
                    args = (users, seconds, pool, examples, out)
                    sweep(result, server, name, setting, committed[name], *args)
        finally:
            if server is not None:
                server.stop()
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return result


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--pool", type=Path, default=POOL)
    parser.add_argument("--models", nargs="*", help="default: every .mar with a payload pool")
    parser.add_argument(
        "--settings", nargs="*", help=f"of {[s.name for s in SETTINGS]}; default {DEFAULT_SETTINGS}"
    )
    parser.add_argument("--users", nargs="*", type=int, default=list(USERS))
    parser.add_argument("--seconds", type=float, default=SECONDS, help="per run, after ramp-up")
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--out", type=Path, default=RESULTS, help="report.md, plots/, profile.json")
    parser.add_argument("--report-only", action="store_true", help="redo the report from JSON")
    parser.add_argument(
        "--merge", action="store_true", help="keep the other models' results in profile.json"
    )
    args = parser.parse_args(argv)
    summary = args.out / SUMMARY.name
    if args.report_only:
        result = json.loads(summary.read_text())
    else:
        pool_index = json.loads((args.pool / "index.json").read_text())
        names = args.models or [n for n in model_names(args.store) if n in pool_index]
        by_name = {s.name: s for s in SETTINGS}
        settings = [by_name[s] for s in args.settings or DEFAULT_SETTINGS]
        result = profile(
            names, settings, args.users, args.seconds, args.store, args.pool, args.runs
        )
        if args.merge and summary.exists():
            result = merge(json.loads(summary.read_text()), result)
        args.out.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps(result, indent=1) + "\n")
    # One final newline, as the end-of-file hook wants it.
    (args.out / REPORT.name).write_text(report(result, args.out / PLOTS.name).rstrip("\n") + "\n")
    print(f"wrote {summary}, {args.out / REPORT.name}, {args.out / PLOTS.name}/")


if __name__ == "__main__":
    main()
