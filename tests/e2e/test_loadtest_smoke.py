"""CI smoke load test: the real locustfile against a real torchserve serving every model of
model_archives/ (tiny training runs), with real payload pools."""

import json
import os
import subprocess
import sys

import pytest

from serve.client import token
from serve.config import ROOT
from train.core.pools import pool_hooks, write_pools
from train.core.registry import served_models

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(every_model_server):
    """The session's torchserve with every model."""
    return every_model_server


@pytest.fixture(scope="module")
def served(server) -> list[str]:
    """The models the session server has registered (GET /models)."""
    names = server.client().models()  # GET /models, which raises on any status but 200
    assert names == served_models(), "the smoke server must serve every registered model"
    return names


@pytest.fixture(scope="module")
def pool(served, tmp_path_factory):
    """A small real payload pool for each served model, written as `make pools` does."""
    missing = [name for name in served if name not in pool_hooks()]
    assert not missing, f"served models without a payload pool: {missing}"
    out = tmp_path_factory.mktemp("pool")
    write_pools(out, served, size=40, seed=1)
    return out


def locust(server, pool, out, seconds, *args):
    """Runs loadtests/locustfile.py headless; returns (exit code, summary JSON, stderr)."""
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtests" / "locustfile.py"),
        "--headless",
        "--only-summary",
        "--host",
        server.inference,
        "-t",
        f"{seconds}s",
        "--pool",
        str(pool),
        "--csv",
        str(out / "run"),
        "--summary-json",
        str(out / "summary.json"),
        *args,
    ]
    env = {**os.environ, "LOADTEST_TOKEN": token("inference", server.key_file)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    summary = json.loads((out / "summary.json").read_text())
    return done.returncode, summary, done.stderr


def test_every_model_under_load_without_failures(server, served, pool, tmp_path):
    users = 2 * len(served)  # two users per class at equal weights
    rc, summary, err = locust(
        server, pool, tmp_path, 20, "-u", str(users), "-r", str(users), "--max-fail-ratio", "0"
    )
    assert rc == 0, err[-3000:]
    assert summary["passed"], summary["violations"]
    assert sorted(summary["endpoints"]) == served
    for name, row in summary["endpoints"].items():
        assert row["requests"] > 0, name
        assert row["failures"] == 0, (name, err[-3000:])
    # Locust's own CSV agrees with the summary.
    stats = (tmp_path / "run_stats.csv").read_text().splitlines()
    assert len(stats) == len(served) + 2  # header, one row per model, Aggregated


def test_vertex_envelope_and_a_missed_threshold_exits_non_zero(server, served, pool, tmp_path):
    name = served[-1]
    rc, summary, err = locust(
        server,
        pool,
        tmp_path,
        4,
        name,
        "-u",
        "2",
        "-r",
        "2",
        "--vertex",
        "--instances",
        "3",
        "--max-fail-ratio",
        "0",
        "--max-p95-ms",
        "0.001",
    )
    row = summary["endpoints"][name]
    assert row["requests"] > 0 and row["failures"] == 0, err[-3000:]
    assert rc == 1
    assert summary["violations"] == [f"{name}: p95_ms {row['p95_ms']} > 0.001"]
