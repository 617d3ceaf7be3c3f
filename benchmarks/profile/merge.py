"""`python -m benchmarks.profile --merge`: a later pass keeps the other models' results."""

from typing import Any

from benchmarks.profile.settings import SETTINGS


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
