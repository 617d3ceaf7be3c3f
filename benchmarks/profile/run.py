"""`make profile`: Locust concurrency sweeps per model and server setting, with TorchServe's own
time split and the in-process scripted-model throughput measured in the same run.

For each setting (SETTINGS: torch threads, batch size and delay, workers per model), a
torchserve on free ports (scripts.tsctl.start_server) serves the models; per model, Locust
(loadtests/locustfile.py, the same file `make loadtest` runs) drives 1, 2, 4, ... users in a
closed loop with the real payload pool, one run per user count. During each run /metrics is
scraped (queue and inference latency counters, HandlerTime/PredictionTime gauges) and the CPU
time of the server's processes and of the load generator is read from /proc. Two more runs per
model and setting send only the example request of examples/ (1 and the most users), the same
request `benchmarks.latency.in_process` times in-process at batch 1 .. 32, so P1 and P2 compare
like with like.

Writes benchmarks/profile.json (everything measured), benchmarks/report.md and
benchmarks/plots/*.png; raw Locust output goes to benchmarks/runs/ (not committed).
Usage: python -m benchmarks.profile [--models a b] [--settings s t] [--users 1 2 4]
       [--seconds 6] [--report-only]
"""

import argparse
import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from benchmarks.profile_report import report
from scripts.tsctl import ROOT, Server, http, model_names, start_server, stop_server, token

BENCH = ROOT / "benchmarks"
RUNS = BENCH / "runs"
PLOTS = BENCH / "plots"
REPORT = BENCH / "report.md"
SUMMARY = BENCH / "profile.json"
POOL = ROOT / "loadtests" / "pool"
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
USERS = (1, 2, 4, 8, 16, 32)
SECONDS = 6.0
COMMAND = "make profile"


@dataclass(frozen=True)
class Setting:
    """One server configuration to sweep; None keeps the model's committed value."""

    name: str
    what: str
    env: dict[str, str] = field(default_factory=dict)
    batch_size: Optional[int] = None
    max_batch_delay: Optional[int] = None
    workers: Optional[int] = None
    quiet_log: bool = False
    models: tuple[str, ...] = ()  # name prefixes it is worth running for; () = every model

    def server(self) -> tuple:
        """What needs its own torchserve start (the rest is set through the management API)."""
        return tuple(sorted(self.env.items())), self.quiet_log

    def applies(self, model: str) -> bool:
        return not self.models or model.startswith(self.models)


ONE = {"OMP_NUM_THREADS": "1"}
QUIET = "1 thread and a quiet frontend log"
GRAPH = ("cora", "mutag", "qm9")
SETTINGS = [
    Setting("default", "committed config.properties and model-config.yaml"),
    Setting("threads1", "workers run torch on 1 thread (OMP_NUM_THREADS=1)", ONE, models=GRAPH),
    Setting(
        "threads1_quiet",
        "1 thread, and the frontend logs warnings only (TorchServe's own log4j2.xml writes "
        "about ten DEBUG/INFO lines per request, most of them twice)",
        ONE,
        quiet_log=True,
    ),
    Setting(
        "threads1_quiet_batch1",
        f"{QUIET}, batch size 1 (no dynamic batching)",
        ONE,
        batch_size=1,
        max_batch_delay=0,
        quiet_log=True,
        models=GRAPH,
    ),
    Setting(
        "threads1_quiet_delay1",
        f"{QUIET}, max batch delay 1 ms",
        ONE,
        max_batch_delay=1,
        quiet_log=True,
        models=(*GRAPH, "flowers"),
    ),
    Setting("threads1_quiet_workers2", f"{QUIET}, 2 workers per model", ONE, None, None, 2, True),
    # Against the committed (tuned) defaults: maxBatchDelay 1 ms, torch_threads 1 for the
    # graph and QM9 models (model-config.yaml), TorchServe's own log config.
    Setting("delay5", "max batch delay 5 ms (the value before tuning)", max_batch_delay=5),
    Setting(
        "batch1",
        "batch size 1 (no dynamic batching)",
        batch_size=1,
        max_batch_delay=0,
        models=GRAPH,
    ),
    Setting("workers2", "2 workers per model", workers=2),
]
# What `make profile` sweeps unless --settings names others: about 35 minutes for the eight
# models on 2 cores. The threads1* settings (1 torch thread through OMP_NUM_THREADS, a quiet
# frontend log) are what the tuning was chosen from: benchmarks/results/before_tuning/.
DEFAULT_SETTINGS = ("default", "delay5", "batch1", "workers2")

# TorchServe 0.12's own log4j2.xml with the org.pytorch.serve logger at WARN and not repeated
# through the root logger; the access log stays, and so do the per-batch metric lines of
# WorkerLifeCycle, which the profile reads (HandlerTime and PredictionTime of every batch).
QUIET_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders>
    <RollingFile name="access_log" fileName="${env:LOG_LOCATION:-logs}/access_log.log"
        filePattern="${env:LOG_LOCATION:-logs}/access_log.%d{dd-MMM}.log.gz">
      <PatternLayout pattern="%d{ISO8601} - %m%n"/>
      <Policies><SizeBasedTriggeringPolicy size="100 MB"/></Policies>
    </RollingFile>
    <RollingFile name="ts_log" fileName="${env:LOG_LOCATION:-logs}/ts_log.log"
        filePattern="${env:LOG_LOCATION:-logs}/ts_log.%d{dd-MMM}.log.gz">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %t %c - %m%n"/>
      <Policies><SizeBasedTriggeringPolicy size="100 MB"/></Policies>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="info" additivity="false">
      <AppenderRef ref="access_log"/>
    </Logger>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Logger name="MODEL_LOG" level="warn" additivity="false"><AppenderRef ref="ts_log"/></Logger>
    <Logger name="MODEL_METRICS" level="warn" additivity="false"/>
    <Logger name="TS_METRICS" level="warn" additivity="false"/>
    <Logger name="org.pytorch.serve" level="warn" additivity="false">
      <AppenderRef ref="ts_log"/>
    </Logger>
    <Logger name="org.pytorch.serve.wlm.WorkerLifeCycle" level="info" additivity="false">
      <AppenderRef ref="ts_log"/>
    </Logger>
    <Root level="warn"><AppenderRef ref="ts_log"/></Root>
  </Loggers>
</Configuration>
"""


# --- Locust output --------------------------------------------------------------------------


def read_stats_csv(path: Path, name: str) -> dict[str, Any]:
    """One endpoint's row of Locust's `<prefix>_stats.csv` (requests, rps, percentiles in ms)."""
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["Name"] == name:
                num = lambda key, row=row: _number(row[key])  # noqa: E731
                return {
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "rps": num("Requests/s"),
                    "mean_ms": num("Average Response Time"),
                    "p50_ms": num("50%"),
                    "p95_ms": num("95%"),
                    "p99_ms": num("99%"),
                    "max_ms": num("Max Response Time"),
                }
    raise KeyError(f"{name} not in {path}")


def _number(text: str) -> Optional[float]:
    return float(text) if text not in ("", "N/A") else None


def read_run(prefix: Path, name: str) -> dict[str, Any]:
    """A Locust run's figures for one model: its CSV row plus the locustfile's summary JSON
    (exact percentiles, mean X-Batch-Size, load generator CPU)."""
    row = read_stats_csv(Path(f"{prefix}_stats.csv"), name)
    summary = json.loads(Path(f"{prefix}_summary.json").read_text())
    endpoint = summary["endpoints"][name]
    row["exact"] = endpoint["exact"]
    row["batch_size_mean"] = endpoint["batch_size_mean"]
    row["loadgen_cores"] = summary["loadgen"]["cores"]
    row["wall_s"] = summary["loadgen"]["wall_s"]
    return row


def run_locust(
    host: str, tok: str, name: str, users: int, seconds: float, pool: Path, prefix: Path
) -> subprocess.CompletedProcess:
    """One headless closed-loop Locust run of one user class; stats exclude the ramp-up."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        name,
        "--headless",
        "--only-summary",
        "--host",
        host,
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{max(1, round(seconds))}s",
        "--reset-stats",
        "--stop-timeout",
        "10",
        "--pool",
        str(pool),
        "--csv",
        str(prefix),
        "--summary-json",
        f"{prefix}_summary.json",
        "--max-fail-ratio",
        "1",
        "--loglevel",
        "WARNING",
    ]
    env = {**os.environ, "LOADTEST_TOKEN": tok}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)


# --- TorchServe's side ----------------------------------------------------------------------


def scrape(metrics_url: str, name: str) -> dict[str, float]:
    """Per-model counters (ts_*) and gauges (HandlerTime, PredictionTime) from /metrics."""
    text = http(f"{metrics_url}/metrics", timeout=5)[1].decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        if f'model_name="{name}"' in line or f'ModelName="{name}"' in line:
            out[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
    return out


class Sampler:
    """Scrapes /metrics every `interval` s in a thread; gauges hold the last batch's times."""

    def __init__(self, metrics_url: str, name: str, interval: float = 0.25) -> None:
        self.url, self.name, self.interval = metrics_url, name, interval
        self.samples: dict[str, list[float]] = {"HandlerTime": [], "PredictionTime": []}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.wait(self.interval):
            with contextlib.suppress(OSError, ValueError):
                values = scrape(self.url, self.name)
                for key, samples in self.samples.items():
                    if key in values:
                        samples.append(values[key])

    def __enter__(self) -> "Sampler":
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join()

    def mean(self, key: str) -> Optional[float]:
        values = self.samples[key]
        return round(sum(values) / len(values), 3) if values else None


class LogTail:
    """The HandlerTime and PredictionTime (ms) of every batch that a model's workers reported
    while the tail was open: TorchServe logs each in ts_log.log; /metrics keeps only the last."""

    def __init__(self, log: Path, name: str) -> None:
        self.log, self.name = log, name
        self.values: dict[str, list[float]] = {"HandlerTime": [], "PredictionTime": []}

    def __enter__(self) -> "LogTail":
        self.start = self.log.stat().st_size if self.log.exists() else 0
        return self

    def __exit__(self, *_: Any) -> None:
        if not self.log.exists():
            return
        with open(self.log, "rb") as f:
            f.seek(self.start)
            text = f.read().decode(errors="replace")
        seen = set()
        for line in text.splitlines():
            if "[METRICS]" not in line or f"#ModelName:{self.name}," not in line:
                continue
            metric = line.split("[METRICS]", 1)[1]
            if metric in seen:  # the default log config writes every line twice
                continue
            seen.add(metric)
            key, rest = (
                metric.split(".Milliseconds:", 1) if ".Milliseconds:" in metric else ("", "")
            )
            if key in self.values:
                self.values[key].append(float(rest.split("|", 1)[0]))

    def mean(self, key: str) -> Optional[float]:
        values = self.values[key]
        return round(sum(values) / len(values), 3) if values else None


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of every live process in a process group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of stat: pgrp
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values[:8]) - idle) / tick, sum(values[:8]) / tick


def mar_config(mar: Path) -> dict[str, Any]:
    """The model-config.yaml packed in a .mar."""
    with zipfile.ZipFile(mar) as z:
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
        return yaml.safe_load(z.read(manifest["model"]["configFile"])) or {}


def describe(server: Server, name: str) -> dict[str, Any]:
    status, body = http(f"{server.management}/models/{name}", token("management", server.key_file))
    if status != 200:
        raise RuntimeError(f"describe {name}: {status} {body[:200]!r}")
    return json.loads(body)[0]


def apply(server: Server, name: str, setting: Setting, committed: dict[str, Any]) -> dict:
    """Registers the model with the setting's batching and scales its workers; returns them."""
    mgmt = token("management", server.key_file)
    want_batch = setting.batch_size or committed.get("batchSize", 1)
    want_delay = (
        setting.max_batch_delay
        if setting.max_batch_delay is not None
        else committed.get("maxBatchDelay", 100)
    )
    want_workers = setting.workers or committed.get("minWorkers", 1)
    now = describe(server, name)
    if (now["batchSize"], now["maxBatchDelay"]) != (want_batch, want_delay):
        http(f"{server.management}/models/{name}", mgmt, method="DELETE", timeout=120)
        status, body = http(
            f"{server.management}/models?url={name}.mar&model_name={name}&batch_size="
            f"{want_batch}&max_batch_delay={want_delay}&synchronous=true",
            mgmt,
            method="POST",
            timeout=300,
        )
        if status != 200:
            raise RuntimeError(f"registering {name}: {status} {body[:200]!r}")
    status, body = http(
        f"{server.management}/models/{name}?min_worker={want_workers}&max_worker={want_workers}"
        "&synchronous=true",
        mgmt,
        method="PUT",
        timeout=300,
    )
    if status != 200:
        raise RuntimeError(f"scaling {name}: {status} {body[:200]!r}")
    now = describe(server, name)
    ready = [w for w in now["workers"] if w["status"] == "READY"]
    if len(ready) != want_workers:
        raise RuntimeError(f"{name}: {len(ready)} of {want_workers} workers READY")
    return {
        "batch_size": now["batchSize"],
        "max_batch_delay": now["maxBatchDelay"],
        "workers": len(ready),
    }


@contextlib.contextmanager
def environ(extra: dict[str, str]) -> Iterator[None]:
    """os.environ plus `extra` (start_server passes os.environ to torchserve and its workers)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def measured_run(
    server: Server, name: str, users: int, seconds: float, pool: Path, prefix: Path
) -> dict[str, Any]:
    """One Locust run with TorchServe's counters, sampled gauges and CPU time around it."""
    tok = token("inference", server.key_file)
    before = scrape(server.metrics, name)
    cpu0, (busy0, total0) = group_cpu_s(server.proc.pid), machine_cpu_s()
    with (
        Sampler(server.metrics, name) as sampler,
        LogTail(server.log_dir / "ts_log.log", name) as tail,
    ):
        done = run_locust(server.inference, tok, name, users, seconds, pool, prefix)
    cpu1, (busy1, total1) = group_cpu_s(server.proc.pid), machine_cpu_s()
    after = scrape(server.metrics, name)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"locust {name} u={users}: rc={done.returncode}\n{done.stderr[-2000:]}")
    row = read_run(prefix, name)
    row["users"] = users
    n = after.get("ts_inference_requests_total", 0) - before.get("ts_inference_requests_total", 0)
    if n > 0:
        row["ts_ms"] = round(
            (
                after["ts_inference_latency_microseconds"]
                - before.get("ts_inference_latency_microseconds", 0)
            )
            / n
            / 1000,
            3,
        )
        row["queue_ms"] = round(
            (
                after["ts_queue_latency_microseconds"]
                - before.get("ts_queue_latency_microseconds", 0)
            )
            / n
            / 1000,
            3,
        )
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
    index = json.loads((ROOT / "examples" / "index.json").read_text())
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


def machine() -> dict[str, Any]:
    """make bench's machine description plus memory and the serving and load-test versions."""
    from benchmarks.latency import machine as described

    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return {
        **described(),
        "memory_gib": round(int(mem) / 2**20, 1),
        "torchserve": _version("torchserve"),
        "locust": _version("locust"),
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def start(setting: Setting, store: Path, work: Path) -> tuple[Server, dict[str, Any]]:
    """A torchserve with every .mar of the store, as `make serve` starts them, under the
    setting's environment and log config, and how long it took until all were READY (P3)."""
    work.mkdir(parents=True)
    config = None
    if setting.quiet_log:
        (work / "log4j2.xml").write_text(QUIET_LOG4J2)
        config = work / "ts.properties"
        committed = (ROOT / "config.properties").read_text()
        vmargs = f"vmargs=-Dlog4j.configurationFile=file://{work / 'log4j2.xml'}"
        config.write_text(committed.rstrip("\n") + "\n" + vmargs + "\n")
    models = model_names(store)
    with environ(setting.env):
        started = time.perf_counter()
        server = start_server(store, work, store, models, config)
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
    tok = token("inference", server.key_file)
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
        "machine": machine(),
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
                        stop_server(server)
                    server, ready = start(setting, store, Path(tmp) / f"ts{i}")
                    result["ready"][setting.name] = ready
                    print(f"[{setting.name}] every model READY after {ready['seconds']} s")
                for name in filter(setting.applies, names):
                    out = runs / setting.name / name
                    shutil.rmtree(out, ignore_errors=True)
                    args = (users, seconds, pool, examples, out)
                    sweep(result, server, name, setting, committed[name], *args)
        finally:
            if server is not None:
                stop_server(server)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return result


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`new` plus what `old` measured for models that `new` did not (a later pass adds models)."""
    measured = {r["model"] for r in new["runs"]}
    passes = old.get("passes") or [pass_info(old)]
    settings = {s["name"]: s for s in old["settings"]}
    settings.update({s["name"]: s for s in new["settings"]})
    order = [s.name for s in SETTINGS if s.name in settings]
    return {
        **new,
        "settings": [settings[n] for n in order + sorted(set(settings) - set(order))],
        "in_process": {**old["in_process"], **new["in_process"]},
        "ready": {**old["ready"], **new["ready"]},
        "runs": [r for r in old["runs"] if r["model"] not in measured] + new["runs"],
        "passes": [*passes, pass_info(new)],
    }


def pass_info(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "models": sorted({r["model"] for r in result["runs"]}),
        "argv": result.get("argv"),
        **{
            k: result[k]
            for k in ("started", "finished", "load_average_before", "load_average_after")
        },
    }


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
    parser.add_argument("--out", type=Path, default=BENCH, help="report.md, plots/, profile.json")
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
    (args.out / REPORT.name).write_text(report(result, args.out / PLOTS.name) + "\n")
    print(f"wrote {summary}, {args.out / REPORT.name}, {args.out / PLOTS.name}/")


if __name__ == "__main__":
    main()
