"""The profile's plots: latency against throughput and the time split per model, and CPU."""

from pathlib import Path
from typing import Any

from benchmarks.profile.goals import model_ms_for, rows, split


def plot(result: dict[str, Any], plots: Path) -> list[str]:
    """p50/p95/p99 against achieved rps per model (one colour per setting), the time split,
    and the load generator's CPU; returns the PNG paths relative to plots.parent."""
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
        for key, style, who in (
            ("loadgen_cores", "o-", "load generator"),
            ("server_cores", "s--", "torchserve"),
        ):
            x, y = [r["rps"] for r in rs], [r[key] for r in rs]
            ax.plot(x, y, style, color=colours(i), label=f"{name} {who}")
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
