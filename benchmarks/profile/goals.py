"""The profile's verdicts from profile.json: the time split of a run, and goals P1-P3."""

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
