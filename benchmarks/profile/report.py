"""The report of `make profile`: goals P1-P3, the time split, plots and tables, from the
measurements that benchmarks/profile.py writes to benchmarks/profile.json.

`python -m benchmarks.profile --report-only` redoes report.md and plots/ from profile.json.
"""

from pathlib import Path
from typing import Any, Optional


def p2_goal(model: str) -> float:
    """Served / in-process throughput goal: 0.8 for text and image, 0.3 for graph models."""
    return 0.8 if model.startswith(("imdb", "flowers")) else 0.3


def split(run: dict[str, Any], model_ms: Optional[float]) -> dict[str, Optional[float]]:
    """Where a request's mean latency goes, in ms: outside TorchServe (client, HTTP, frontend
    I/O), the job queue and batch wait, the worker round trip outside the handler, the handler
    outside the model, and the model (in-process forward at the run's mean batch size)."""
    ts = run.get("ts_ms")
    queue, handler = run.get("queue_ms"), run.get("handler_ms")
    if ts is None or queue is None:
        return {}
    out: dict[str, Optional[float]] = {
        "outside_ts": run["mean_ms"] - ts,
        "queue": queue,
        "worker_ipc": ts - queue - handler if handler is not None else None,
        "handler": handler - model_ms if handler is not None and model_ms is not None else None,
        "model": model_ms,
    }
    return {k: round(v, 3) if v is not None else None for k, v in out.items()}


def rows(result: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [r for r in result["runs"] if all(r.get(k) == v for k, v in match.items())]


def in_process_at(result: dict[str, Any], name: str, batch: int, threads: str) -> dict | None:
    """In-process figures at the largest measured batch size not above `batch`."""
    ip = result["in_process"].get(name, {}).get(threads)
    if not ip:
        return None
    sizes = sorted(int(b) for b in ip["batches"] if int(b) <= max(1, batch))
    return {"batch": sizes[-1], **ip["batches"][str(sizes[-1])]} if sizes else None


def threads_of(result: dict[str, Any], setting: str) -> str:
    """The in-process thread count that matches a setting ('1' under OMP_NUM_THREADS=1)."""
    env = next((s["env"] for s in result["settings"] if s["name"] == setting), {})
    if "OMP_NUM_THREADS" in env:
        return env["OMP_NUM_THREADS"]
    return str(max(int(t) for t in next(iter(result["in_process"].values()))))


def model_ms_for(result: dict[str, Any], run: dict[str, Any]) -> Optional[float]:
    batch = round(run.get("batch_size_mean") or 1)
    at = in_process_at(result, run["model"], batch, threads_of(result, run["setting"]))
    return at["p50_ms"] if at else None


def saturation(result: dict[str, Any], name: str, setting: str, payloads: str = "pool") -> dict:
    """The run with the highest achieved rps for a model and setting."""
    candidates = [r for r in rows(result, model=name, setting=setting, payloads=payloads)]
    return max(candidates, key=lambda r: r["rps"] or 0) if candidates else {}


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """P1, P2 and P3 per model for every setting, with the figures behind each verdict."""
    names = sorted({r["model"] for r in result["runs"]})
    settings = [s["name"] for s in result["settings"]]
    out: dict[str, Any] = {"P1": [], "P2": [], "P2_batching": [], "P3": []}
    for name in names:
        for setting in settings:
            threads = threads_of(result, setting)
            one = rows(result, model=name, setting=setting, payloads="example", users=1)
            ip1 = in_process_at(result, name, 1, threads)
            if one and ip1:
                served = one[0]["exact"].get("p50_ms", one[0]["p50_ms"])
                handler = result["in_process"][name][threads]["handler_p50_ms_batch1"]
                out["P1"].append(
                    {
                        "model": name,
                        "setting": setting,
                        "served_p50_ms": served,
                        "in_process_model_p50_ms": ip1["p50_ms"],
                        "in_process_handler_p50_ms": handler,
                        "gap_ms": round(served - ip1["p50_ms"], 3),
                        "met": served - ip1["p50_ms"] <= 3.0,
                        # Means, not medians: where the served time above the model goes.
                        "split": split(one[0], ip1["p50_ms"]),
                    }
                )
            sat = saturation(result, name, setting, "example")
            sat_pool = saturation(result, name, setting, "pool")
            if sat:
                at = in_process_at(result, name, sat["batch_size"], threads)
                ratio = sat["rps"] / at["per_s"] if at and at["per_s"] else None
                out["P2"].append(
                    {
                        "model": name,
                        "setting": setting,
                        "served_rps": sat["rps"],
                        "users": sat["users"],
                        "batch_size": sat["batch_size"],
                        "batch_size_mean": sat["batch_size_mean"],
                        "in_process_batch": at["batch"] if at else None,
                        "in_process_per_s": at["per_s"] if at else None,
                        "ratio": round(ratio, 4) if ratio is not None else None,
                        "goal": p2_goal(name),
                        "met": ratio is not None and ratio >= p2_goal(name),
                        "served_rps_real_pool": sat_pool.get("rps"),
                        # CPU the server spent per request at saturation, against the
                        # in-process model's time per item: how overhead-bound serving is.
                        "server_cpu_ms_per_request": round(
                            sat["server_cores"] * 1000 / sat["rps"], 3
                        )
                        if sat.get("server_cores") and sat["rps"]
                        else None,
                        "in_process_ms_per_item": round(1000 / at["per_s"], 3) if at else None,
                    }
                )
    top = max(result["users"])
    by_name = {s["name"]: s for s in result["settings"]}
    for name in names:
        for setting in settings:
            if by_name[setting]["batch_size"] == 1:
                continue
            # The batch-size-1 setting that differs from this one only in batching.
            single = next(
                (
                    s
                    for s in settings
                    if by_name[s]["batch_size"] == 1
                    and by_name[s]["env"] == by_name[setting]["env"]
                    and by_name[s]["workers"] == by_name[setting]["workers"]
                    and by_name[s].get("quiet_log") == by_name[setting].get("quiet_log")
                ),
                None,
            )
            a = rows(result, model=name, setting=setting, payloads="pool", users=top)
            b = rows(result, model=name, setting=single, payloads="pool", users=top)
            if a and b and b[0]["rps"]:
                lift = a[0]["rps"] / b[0]["rps"]
                out["P2_batching"].append(
                    {
                        "model": name,
                        "setting": setting,
                        "vs": single,
                        "users": top,
                        "rps": a[0]["rps"],
                        "rps_batch1": b[0]["rps"],
                        "lift": round(lift, 2),
                        "met": lift >= 5,
                    }
                )
    for setting, ready in result["ready"].items():
        out["P3"].append({"setting": setting, **ready, "met": ready["seconds"] <= 20})
    return out


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "met" if v else "**missed**"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def plot(result: dict[str, Any], plots: Path) -> list[str]:
    """p50/p95/p99 against achieved rps per model (one colour per setting), the time split,
    and the load generator's CPU; returns the PNG paths relative to benchmarks/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    made = []
    names = sorted({r["model"] for r in result["runs"]})
    settings = [s["name"] for s in result["settings"]]
    colours = plt.get_cmap("tab10")
    for name in names:
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, setting in enumerate(settings):
            rs = sorted(
                rows(result, model=name, setting=setting, payloads="pool"), key=lambda r: r["users"]
            )
            if not rs:
                continue
            x = [r["rps"] for r in rs]
            for q, style in (("p50_ms", "-"), ("p95_ms", "--"), ("p99_ms", ":")):
                ax.plot(
                    x,
                    [r[q] for r in rs],
                    style,
                    marker="o",
                    ms=3,
                    color=colours(i),
                    label=f"{setting} {q[:3]}",
                )
            for r in rs:
                ax.annotate(str(r["users"]), (r["rps"], r["p50_ms"]), fontsize=7, color=colours(i))
        ax.set_yscale("log")
        ax.set_xlabel("achieved requests/s (numbers: concurrent users)")
        ax.set_ylabel("latency (ms, log)")
        ax.set_title(f"{name}: latency against throughput, real payload pool")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=len(settings))
        fig.tight_layout()
        path = plots / f"{name}_latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(str(path.relative_to(plots.parent)))

        parts = ("outside_ts", "queue", "worker_ipc", "handler", "model")
        bars, labels = [], []
        for setting in settings:
            for u in sorted({min(result["users"]), max(result["users"])}):
                rs = rows(result, model=name, setting=setting, payloads="pool", users=u)
                if rs:
                    s = split(rs[0], model_ms_for(result, rs[0]))
                    if s:
                        bars.append([max(0.0, s.get(p) or 0.0) for p in parts])
                        labels.append(f"{setting} u={u}")
        if bars:
            fig, ax = plt.subplots(figsize=(8, 0.4 * len(bars) + 1.5))
            left = [0.0] * len(bars)
            for j, part in enumerate(parts):
                widths = [b[j] for b in bars]
                ax.barh(labels, widths, left=left, label=part, color=colours(j))
                left = [a + w for a, w in zip(left, widths)]
            ax.set_xlabel("mean ms per request")
            ax.set_title(f"{name}: where a request's time goes")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            fig.tight_layout()
            path = plots / f"{name}_split.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            made.append(str(path.relative_to(plots.parent)))

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(names):
        rs = sorted(
            rows(result, model=name, setting=settings[0], payloads="pool"), key=lambda r: r["users"]
        )
        ax.plot(
            [r["rps"] for r in rs],
            [r["loadgen_cores"] for r in rs],
            "o-",
            color=colours(i),
            label=f"{name} load generator",
        )
        ax.plot(
            [r["rps"] for r in rs],
            [r["server_cores"] for r in rs],
            "s--",
            color=colours(i),
            label=f"{name} torchserve",
        )
    ax.set_xlabel("achieved requests/s")
    ax.set_ylabel("cores used (of 2)")
    ax.set_title(f"CPU: Locust against TorchServe ({settings[0]})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = plots / "cpu.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(str(path.relative_to(plots.parent)))
    return made


def best_settings(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model: saturation rps and p50 at 1 user (real pool) of the default and of the
    setting with the highest saturation rps."""
    out = []
    for name in sorted({r["model"] for r in result["runs"]}):
        sats = {
            s["name"]: saturation(result, name, s["name"])
            for s in result["settings"]
            if rows(result, model=name, setting=s["name"], payloads="pool")
        }
        best = max(sats, key=lambda k: sats[k]["rps"] or 0)
        one = {
            k: next(iter(rows(result, model=name, setting=k, payloads="pool", users=1)), {})
            for k in sats
        }
        out.append(
            {
                "model": name,
                "best": best,
                "default_rps": sats.get("default", {}).get("rps"),
                "best_rps": sats[best]["rps"],
                "best_users": sats[best]["users"],
                "default_p50_1user": one.get("default", {}).get("p50_ms"),
                "best_p50_1user": one[best].get("p50_ms"),
            }
        )
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The summary: default against the best setting per model, variants, and Locust's CPU."""
    lines = [
        "## Summary",
        "",
        "Saturation throughput (best rps over the user counts) and p50 at 1 user, real pool.",
        "",
        "| model | default: rps / p50 at 1 user (ms) | best setting | best: rps / p50 at 1 user |",
        "|---|---|---|---|",
    ]
    for b in best_settings(result):
        lines.append(
            f"| {b['model']} | {fmt(b['default_rps'])} / {fmt(b['default_p50_1user'], 0)} | "
            f"{b['best']} | {fmt(b['best_rps'])} ({b['best_users']} users) / "
            f"{fmt(b['best_p50_1user'], 0)} |"
        )
    names = sorted({r["model"] for r in result["runs"]})
    pairs = [(n, f"{n}_int8") for n in names if f"{n}_int8" in names]
    if pairs:
        lines += [
            "",
            "TorchScript fp32 against its int8 twin (same setting, same pool):",
            "",
            "| setting | model | p50 at 1 user (ms) | saturation rps | int8 p50 at 1 user | "
            "int8 saturation rps | int8 speed-up |",
            "|---|---|---|---|---|---|---|",
        ]
        for fp32, int8 in pairs:
            for s in result["settings"]:
                a = saturation(result, fp32, s["name"])
                b = saturation(result, int8, s["name"])
                a1 = rows(result, model=fp32, setting=s["name"], payloads="pool", users=1)
                b1 = rows(result, model=int8, setting=s["name"], payloads="pool", users=1)
                if a and b and a1 and b1:
                    lines.append(
                        f"| {s['name']} | {fp32} | {fmt(a1[0]['p50_ms'], 0)} | {fmt(a['rps'])} | "
                        f"{fmt(b1[0]['p50_ms'], 0)} | {fmt(b['rps'])} | "
                        f"{fmt(b['rps'] / a['rps'] if a['rps'] else None, 2)}× |"
                    )
    gen = [r for r in result["runs"] if r.get("loadgen_cores") is not None]
    if gen:
        top = max(gen, key=lambda r: r["loadgen_cores"])
        share = [
            r["loadgen_cores"] / (r["loadgen_cores"] + r["server_cores"])
            for r in gen
            if r.get("server_cores")
        ]
        lines += [
            "",
            f"Load generator: Locust used at most {top['loadgen_cores']:.2f} of the 2 cores "
            f"({top['model']}, {top['setting']}, {top['users']} users, {top['rps']:.0f} rps, "
            f"while TorchServe used {top['server_cores']:.2f}); over all runs its share of the "
            f"CPU that Locust and TorchServe used together was {min(share):.0%} to "
            f"{max(share):.0%} (median {sorted(share)[len(share) // 2]:.0%}). That CPU is "
            "taken from the server: see docs/loadtests.md for distributed mode.",
        ]
    return [*lines, ""]


def report(result: dict[str, Any], plots: Path) -> str:
    """benchmarks/report.md from profile.json."""
    m = result["machine"]
    g = goals(result)
    images = plot(result, plots)
    names = sorted({r["model"] for r in result["runs"]})
    out = [
        "# Performance profile",
        "",
        f"Generated by `{result['command']}` (this run: `{result.get('argv', result['command'])}`)"
        f" from {result['started']} to "
        f"{result['finished']}. Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; "
        f"Python {m['python']}, torch {m['torch']}, TorchServe {m['torchserve']}, Locust "
        f"{m['locust']}. Load average (1, 5, 15 min) before: {result['load_average_before']}, "
        f"after: {result['load_average_after']}. Each run: {result['seconds_per_run']} s "
        "closed loop (no think time) after the ramp-up, one model at a time, Locust on the same "
        "2 cores as the server. Raw Locust CSV and summaries: benchmarks/runs/ (not committed); "
        "every figure below is in benchmarks/profile.json.",
        "",
        *[
            f"- Pass {i + 1}: {', '.join(p['models'])} (`{p.get('argv')}`), {p['started']} to "
            f"{p['finished']}, load "
            f"average before {p['load_average_before']}, after {p['load_average_after']}."
            for i, p in enumerate(result.get("passes", []))
        ],
        "",
        "Settings:",
        "",
        *[f"- `{s['name']}`: {s['what']}" for s in result["settings"]],
        "",
        *summary_lines(result),
        "## Goals",
        "",
        "**P1**: served p50 at 1 user minus in-process scripted-model p50 at batch 1, on the same "
        "request (examples/), at most 3 ms.",
        "",
        "| model | setting | served p50 (ms) | in-process model p50 (ms) | in-process handler p50 "
        "(ms) | gap (ms) | P1 | mean split: outside TS / queue / worker round trip / handler "
        "outside model (ms) |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['model']} | {r['setting']} | {fmt(r['served_p50_ms'], 2)} | "
            f"{fmt(r['in_process_model_p50_ms'], 2)} | {fmt(r['in_process_handler_p50_ms'], 2)} |"
            f" {fmt(r['gap_ms'], 2)} | {fmt(r['met'])} | "
            + " / ".join(
                fmt(r["split"].get(k), 2) for k in ("outside_ts", "queue", "worker_ipc", "handler")
            )
            + " |"
            for r in g["P1"]
        ],
        "",
        "**P2**: served saturation throughput (the best rps over the user counts, same request "
        "as in-process) over in-process scripted throughput at the served batch size "
        "(configured batch size; in-process measured at the largest of 1, 2, 4, ... 32 not above "
        "it): at least 0.8 for text and image, 0.3 for graph models. The last column is the "
        "saturation throughput with the varied real pool.",
        "",
        "| model | setting | served rps (users) | batch size: configured / mean served | "
        "in-process per s (batch) | ratio | goal | P2 | real pool rps | server CPU ms per "
        "request / in-process ms per item |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['model']} | {r['setting']} | {fmt(r['served_rps'])} ({r['users']}) | "
            f"{r['batch_size']} / {fmt(r['batch_size_mean'], 2)} | {fmt(r['in_process_per_s'], 0)}"
            f" ({r['in_process_batch']}) | {fmt(r['ratio'], 3)} | {r['goal']} | {fmt(r['met'])} "
            f"| {fmt(r['served_rps_real_pool'])} | {fmt(r['server_cpu_ms_per_request'], 2)} / "
            f"{fmt(r['in_process_ms_per_item'], 3)} |"
            for r in g["P2"]
        ],
        "",
        "**P2, batching**: served rps with dynamic batching over batch size 1, at the most "
        "users, real pool: at least 5 times for MUTAG.",
        "",
        "| model | setting | vs | users | rps | rps at batch 1 | lift | P2 (≥ 5×) |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['model']} | {r['setting']} | {r['vs']} | {r['users']} | {fmt(r['rps'])} | "
            f"{fmt(r['rps_batch1'])} | {fmt(r['lift'], 2)} | {fmt(r['met'])} |"
            for r in g["P2_batching"]
        ],
        "",
        "**P3**: every model READY at most 20 s after `torchserve --start` (all .mar files of "
        "the store, started as `make serve` does; timed from the start command to the last "
        "worker READY).",
        "",
        "| setting | seconds | models | P3 |",
        "|---|---|---|---|",
        *[
            f"| {r['setting']} | {fmt(r['seconds'])} | {', '.join(r['models'])} | {fmt(r['met'])} |"
            for r in g["P3"]
        ],
        "",
        "## Where the time goes",
        "",
        "Mean ms per request, real pool: Locust's mean latency minus TorchServe's own "
        "`ts_inference_latency_microseconds` is the time outside TorchServe's job (client, "
        "HTTP, frontend I/O); `ts_queue_latency_microseconds` is the job queue plus the wait "
        "for a batch to fill; the HandlerTime gauge (sampled every 0.25 s) is the handler for "
        "the whole batch, and the rest of the backend time is the worker round trip (frontend "
        "to Python worker and back); the model is the in-process scripted forward at the run's "
        "mean batch size.",
        "",
        "| model | setting | users | Locust mean | outside TorchServe | queue + batch wait | "
        "worker round trip | handler outside model | model | mean batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        for s in result["settings"]:
            for u in sorted({min(result["users"]), max(result["users"])}):
                rs = rows(result, model=name, setting=s["name"], payloads="pool", users=u)
                if not rs:
                    continue
                sp = split(rs[0], model_ms_for(result, rs[0]))
                out.append(
                    f"| {name} | {s['name']} | {u} | {fmt(rs[0]['mean_ms'], 2)} | "
                    f"{fmt(sp.get('outside_ts'), 2)} | {fmt(sp.get('queue'), 2)} | "
                    f"{fmt(sp.get('worker_ipc'), 2)} | {fmt(sp.get('handler'), 2)} | "
                    f"{fmt(sp.get('model'), 2)} | {fmt(rs[0]['batch_size_mean'], 2)} |"
                )
    out += [
        "",
        "## Sweeps",
        "",
        "Real payload pool (loadtests/pool/). Latencies in ms from Locust (1 ms buckets below "
        "100 ms); `cores`: CPU used by TorchServe (frontend and workers) / by the Locust process "
        "/ by the whole machine, of 2.",
        "",
    ]
    for name in names:
        out += [
            f"### {name}",
            "",
            *[f"![{name}]({p})" for p in images if Path(p).name.startswith(f"{name}_")],
            "",
            "| setting | users | rps | p50 | p95 | p99 | failures | mean batch | cores: server / "
            "Locust / machine |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in result["settings"]:
            for r in sorted(
                rows(result, model=name, setting=s["name"], payloads="pool"),
                key=lambda r: r["users"],
            ):
                out.append(
                    f"| {s['name']} | {r['users']} | {fmt(r['rps'])} | {fmt(r['p50_ms'], 0)} | "
                    f"{fmt(r['p95_ms'], 0)} | {fmt(r['p99_ms'], 0)} | {r['failures']} | "
                    f"{fmt(r['batch_size_mean'], 2)} | {fmt(r['server_cores'], 2)} / "
                    f"{fmt(r['loadgen_cores'], 2)} / {fmt(r['machine_busy_cores'], 2)} |"
                )
        out.append("")
    out += [
        "## In-process (benchmarks.latency.in_process, same run)",
        "",
        "Scripted model on the examples/ request repeated to the batch size, p50 ms and items/s.",
        "",
        "| model | torch threads | "
        + " | ".join(f"b={b}" for b in (1, 2, 4, 8, 16, 32))
        + " | handler b=1 |",
        "|---|---|" + "---|" * 7,
    ]
    for name in names:
        for threads, ip in sorted(result["in_process"].get(name, {}).items(), reverse=True):
            cells = [
                f"{ip['batches'][str(b)]['p50_ms']:.2f} ms, {ip['batches'][str(b)]['per_s']:.0f}/s"
                if str(b) in ip["batches"]
                else "–"
                for b in (1, 2, 4, 8, 16, 32)
            ]
            out.append(
                f"| {name} | {threads} | "
                + " | ".join(cells)
                + f" | {ip['handler_p50_ms_batch1']:.2f} ms |"
            )
    out += ["", "![cpu](plots/cpu.png)", ""]
    return "\n".join(out)
