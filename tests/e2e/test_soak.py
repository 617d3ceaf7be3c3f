"""`make soak` in 30 s (issue 13, section 4): the same code path as benchmarks/soak.py against
the session's graph-model server, checked only to work and to write its outputs. The figures
(10 minutes at 80% of saturation, every model) come from `make soak` on a quiet machine."""

import csv
import json

import pytest

from benchmarks.procs import worker_pids
from benchmarks.soak import run_soak
from tests.conftest import GRAPH_MODELS
from train.core.pools import write_pools

pytestmark = pytest.mark.e2e


def test_a_short_soak_runs_and_writes_its_results_and_plot(server, tmp_path):
    pool = tmp_path / "pool"
    write_pools(pool, list(GRAPH_MODELS), size=20, seed=4)
    models = list(GRAPH_MODELS)
    result = run_soak(
        server, models, pool, tmp_path / "runs", seconds=30, rate=15, warmup=10,
        users_per_model=2, interval=2, plot_path=tmp_path / "soak.png",
    )  # fmt: skip
    json.dumps(result)  # what main() writes to benchmarks/results/soak.json
    assert result["errors"] == 0, result["per_model"]
    assert sorted(result["per_model"]) == sorted(models)
    assert all(row["requests"] > 0 for row in result["per_model"].values())
    # One RSS line for the frontend and for every worker, each with a slope after warm-up.
    labels = {"frontend"} | {f"{m}/{i}" for m in models for i in range(len(worker_pids(server, m)))}
    assert labels <= set(result["rss_slope_mib_per_min"])
    assert all(result["rss_slope_mib_per_min"][label] is not None for label in labels)
    # The request log holds every request Locust counted; the bins cover the run.
    with open(tmp_path / "runs" / "requests.csv") as f:
        logged = list(csv.DictReader(f))
    assert len(logged) == result["requests"]
    assert sum(b["requests"] for b in result["latency_bins"]) == len(logged)
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
