"""`make overload`: twice the saturation rate, then back to a low rate (issue 13, section 3).

Per model, a torchserve serving only that model (its committed model-config.yaml, so its
`jobQueueSize`) is driven in four phases with the model's real payload pool:
1. saturation: `--clients` closed-loop clients for `--saturation-seconds` give a first
   estimate (Python clients on the same 2 cores fill few batches, so it is low); open-loop
   probes from 1.5 times it, doubled until the server answers fewer than 90% of them, give the
   saturation throughput S: the 200s per second while arrivals outrun the server;
2. baseline: an open loop at `--low` x S (arrivals evenly spaced, each request sent whether or
   not the earlier ones were answered), whose p99 sets the "recovered" latency bound;
3. overload: an open loop at `--factor` x S (2 by default) for `--overload-seconds`;
4. recovery: the low rate again.
Open loop because a closed loop slows down with the server and never overloads it. The
generator is asyncio + aiohttp, one connection per request in flight (no pool to wait on).

Reports per model: the shed ratio (requests not answered 200 during the overload, and how
many were 503), the p99 of the admitted requests and of the shed ones (fast 503s), the most
requests TorchServe held at once, and the recovery: seconds from the drop in load to the end
of the last request that failed or took more than 3 x the baseline p99. Writes
benchmarks/results/overload.json.
Usage: python -m benchmarks.overload [--models a b] [--overload-seconds 30] [--factor 2]
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import aiohttp
import numpy as np

from benchmarks.common import (
    RESULTS,
    machine,
    mar_config,
    memory_gib,
    server_arguments,
    write_result,
)
from benchmarks.faults import Load, pool_bodies
from serve.server import Server, start

OUT = RESULTS / "overload.json"
COMMAND = "make overload"
# The slowest models on 2 cores: their saturation is low enough that one Python generator
# can send twice it (QM9 about 500/s), and a queue of them takes the longest to drain.
MODELS = ("imdb_bert_int8", "qm9_et")


def saturation(server: Server, model: str, pool: Path, clients: int, seconds: float) -> float:
    """200 answers per second of `clients` closed-loop clients, after a 2 s warm-up."""
    with Load(server, model, pool, clients) as load:
        t0 = time.monotonic() + 2
        time.sleep(2 + seconds)
    ok = [r for r in load.records if t0 <= r[1] <= t0 + seconds and r[2] == 200]
    if not ok:
        raise RuntimeError(f"{model}: no 200 in {seconds} s of closed loop: {load.records[:5]}")
    return len(ok) / seconds


async def open_loop(
    url: str,
    tok: Optional[str],
    bodies: list[bytes],
    ctypes: list[str],
    phases: list[tuple[str, float, float]],
    timeout: float,
) -> list[tuple[str, float, float, int]]:
    """Sends each phase's (name, rate, seconds) arrivals on schedule; returns every request as
    (phase, scheduled s, end s, status), -1 = no HTTP answer within `timeout`."""
    auth = {"Authorization": f"Bearer {tok}"} if tok else {}
    out: list[tuple[str, float, float, int]] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    connector = aiohttp.TCPConnector(limit=0)  # open loop: never wait for a free connection
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:

        async def one(phase: str, at: float, i: int) -> None:
            headers = {"Content-Type": ctypes[i], **auth}
            try:
                async with session.post(url, data=bodies[i], headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError):
                status = -1
            out.append((phase, at, loop.time() - t0, status))

        tasks, start, k = [], 0.0, 0
        for phase, rate, seconds in phases:
            for j in range(int(rate * seconds)):
                at = start + j / rate
                await asyncio.sleep(max(0.0, at - (loop.time() - t0)))
                tasks.append(asyncio.create_task(one(phase, at, k % len(bodies))))
                k += 1
            start += seconds
        await asyncio.gather(*tasks)
    return out


def open_loop_saturation(
    url: str,
    tok: Optional[str],
    bodies: list[bytes],
    ctypes: list[str],
    start_rate: float,
    seconds: float,
    timeout: float,
) -> tuple[float, list[dict[str, float]]]:
    """The model's throughput when arrivals outrun it: open-loop probes from `start_rate`,
    doubled until the server answers fewer than 90% of them with 200 (in the probe's second
    half); that answer rate is the saturation. Returns it and the probes."""
    rate, probes = start_rate, []
    for _ in range(5):
        recs = asyncio.run(open_loop(url, tok, bodies, ctypes, [("probe", rate, seconds)], timeout))
        half = seconds / 2
        served = sum(1 for r in recs if r[3] == 200 and half <= r[2] <= seconds) / half
        probes.append({"offered_rps": round(rate, 1), "served_rps": round(served, 1)})
        if served < 0.9 * rate:
            return served, probes
        rate *= 2
    raise RuntimeError(f"the server kept up with every probe, {probes}: raise --clients")


def p99(values: list[float]) -> Optional[float]:
    return round(float(np.percentile(values, 99)) * 1000, 1) if values else None


def recovered_bins(recs: list[tuple[str, float, float, int]], t_drop: float, slow: float) -> float:
    """Seconds after the drop until every later 1 s bin (by arrival) has no failure and a p99
    under `slow`: when the server is back, as a client's dashboard would show it."""
    if not recs:
        return 0.0
    bins: dict[int, list[tuple[str, float, float, int]]] = {}
    for r in recs:
        bins.setdefault(int(r[1] - t_drop), []).append(r)
    last_bad = -1
    for b, rows in sorted(bins.items()):
        lat = [r[2] - r[1] for r in rows]
        if any(r[3] != 200 for r in rows) or float(np.percentile(lat, 99)) > slow:
            last_bad = b
    return float(last_bad + 1)


def analyse(
    recs: list[tuple[str, float, float, int]], phases: list[tuple[str, float, float]]
) -> dict[str, Any]:
    """Shed ratio and p99s of the overload, and the recovery after it."""
    by = {name: [r for r in recs if r[0] == name] for name, _, _ in phases}
    base_ok = [r[2] - r[1] for r in by["baseline"] if r[3] == 200]
    slow = 3 * float(np.percentile(base_ok, 99)) if base_ok else 1.0
    over = by["overload"]
    admitted = [r[2] - r[1] for r in over if r[3] == 200]
    shed = [r for r in over if r[3] != 200]
    codes: dict[str, int] = {}
    for r in shed:
        codes[str(r[3])] = codes.get(str(r[3]), 0) + 1
    t_drop = sum(s for name, _, s in phases if name != "recovery")
    bad = [r[2] for r in by["recovery"] if r[3] != 200 or r[2] - r[1] > slow]
    # Requests in the server at once: answered after their arrival, counted at each arrival.
    ends = np.sort(np.array([r[2] for r in recs]))
    starts = np.sort(np.array([r[1] for r in recs]))
    held = int(max(np.searchsorted(starts, s, "right") - np.searchsorted(ends, s) for s in starts))
    return {
        "baseline_p99_ms": p99(base_ok),
        "recovered_below_ms": round(slow * 1000, 1),
        "overload_requests": len(over),
        "overload_admitted": len(admitted),
        "shed": len(shed),
        "shed_ratio": round(len(shed) / max(1, len(over)), 4),
        "shed_codes": codes,
        "admitted_p50_ms": round(float(np.median(admitted)) * 1000, 1) if admitted else None,
        "admitted_p99_ms": p99(admitted),
        "admitted_max_ms": round(max(admitted) * 1000, 1) if admitted else None,
        "shed_p99_ms": p99([r[2] - r[1] for r in shed]),
        "most_in_flight": held,
        "recovery_s": round(max(bad) - t_drop, 3) if bad else 0.0,
        # One slow request late in the phase (a GC pause, the generator's own hiccup) sets
        # recovery_s; these say how many there were and when each 1 s bin's p99 came back.
        "recovery_slow": len(bad),
        "recovery_p99_s": recovered_bins(by["recovery"], t_drop, slow),
        "recovery_requests": len(by["recovery"]),
        "recovery_failed": sum(1 for r in by["recovery"] if r[3] != 200),
    }


def overload_model(
    store: Path,
    model: str,
    pool: Path,
    workdir: Path,
    clients: int,
    saturation_s: float,
    factor: float,
    low: float,
    overload_s: float,
    low_s: float,
    timeout: float,
) -> dict[str, Any]:
    """All four phases against a torchserve that serves only `model`."""
    only = workdir / "store"
    only.mkdir(parents=True)
    (only / f"{model}.mar").symlink_to((store / f"{model}.mar").resolve())
    server = start(only, workdir, [model])
    try:
        config = server.client().describe(model)
        closed = saturation(server, model, pool, clients, saturation_s)
        bodies, ctypes = pool_bodies(pool, model)
        url = f"{server.inference}/predictions/{model}"
        tok = server.token()
        sat, probes = open_loop_saturation(
            url, tok, bodies, ctypes, 1.5 * closed, saturation_s, timeout
        )
        # Let the probe's queue drain before the baseline.
        time.sleep(5)
        phases = [
            ("baseline", low * sat, low_s),
            ("overload", factor * sat, overload_s),
            ("recovery", low * sat, low_s),
        ]
        recs = asyncio.run(open_loop(url, tok, bodies, ctypes, phases, timeout))
    finally:
        server.stop()
    return {
        "model": model,
        "workers": len(config["workers"]),
        "batch_size": config["batchSize"],
        "job_queue_size": mar_config(store / f"{model}.mar").get("jobQueueSize"),
        "response_timeout_s": config["responseTimeout"],
        "closed_loop_rps": round(closed, 1),
        "saturation_probes": probes,
        "saturation_rps": round(sat, 1),
        "phases": [{"name": n, "rate_rps": round(r, 1), "seconds": s} for n, r, s in phases],
        **analyse(recs, phases),
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    server_arguments(parser, "default: the models of MODELS", list(MODELS))
    parser.add_argument("--clients", type=int, default=16, help="closed loop for saturation")
    parser.add_argument("--saturation-seconds", type=float, default=15.0)
    parser.add_argument("--factor", type=float, default=2.0, help="overload rate / saturation")
    parser.add_argument("--low", type=float, default=0.3, help="baseline and recovery rate / S")
    parser.add_argument("--overload-seconds", type=float, default=30.0)
    parser.add_argument("--low-seconds", type=float, default=15.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout, seconds")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "command": COMMAND,
        "argv": " ".join(["python -m benchmarks.overload", *sys.argv[1:]]),
        "machine": {**machine("torchserve", "aiohttp"), "memory_gib": memory_gib()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "models": [],
    }
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            row = overload_model(
                args.store, name, args.pool, Path(tmp), args.clients, args.saturation_seconds,
                args.factor, args.low, args.overload_seconds, args.low_seconds, args.timeout,
            )  # fmt: skip
        result["models"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "phases"}))
    write_result(result, args.out)


if __name__ == "__main__":
    main()
