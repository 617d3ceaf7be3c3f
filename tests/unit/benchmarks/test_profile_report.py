"""The profile runner on recorded Locust output (tests/unit/data: two real runs of mutag_gcn)."""

import shutil
from pathlib import Path

import pytest

from benchmarks.profile.goals import goals, split
from benchmarks.profile.locust import read_run, read_stats_csv
from benchmarks.profile.metrics import LogTail
from benchmarks.profile.report import report
from benchmarks.profile.settings import Setting

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture
def recorded(tmp_path) -> dict[int, Path]:
    """The recorded runs as profile.py leaves them: <prefix>_stats.csv, <prefix>_summary.json."""
    prefixes = {}
    for users in (1, 4):
        prefix = tmp_path / f"pool_u{users}"
        for part in ("stats.csv", "summary.json"):
            shutil.copy(DATA / f"locust_mutag_gcn_u{users}_{part}", f"{prefix}_{part}")
        prefixes[users] = prefix
    return prefixes


def test_stats_csv_row_is_read_with_locust_figures():
    row = read_stats_csv(DATA / "locust_mutag_gcn_u4_stats.csv", "mutag_gcn")
    assert row["requests"] == 886 and row["failures"] == 0
    assert row["rps"] == pytest.approx(296.6457, abs=1e-3)
    assert (row["p50_ms"], row["p95_ms"], row["p99_ms"]) == (13, 16, 24)
    assert row["mean_ms"] == pytest.approx(12.7478, abs=1e-3)
    aggregated = read_stats_csv(DATA / "locust_mutag_gcn_u4_stats.csv", "Aggregated")
    assert aggregated["requests"] == row["requests"]
    with pytest.raises(KeyError, match="cora_gcn"):
        read_stats_csv(DATA / "locust_mutag_gcn_u4_stats.csv", "cora_gcn")


def test_run_merges_the_locustfile_summary(recorded):
    run = read_run(recorded[4], "mutag_gcn")
    assert run["requests"] == 886
    # Exact percentiles sit in Locust's 1 ms bucket of the same percentile.
    assert abs(run["exact"]["p50_ms"] - run["p50_ms"]) <= 1
    assert run["exact"]["p50_ms"] <= run["exact"]["p95_ms"] <= run["exact"]["p99_ms"]
    assert 1 < run["batch_size_mean"] <= 4  # 4 users: batches of up to 4
    assert 0 < run["loadgen_cores"] < 2


def test_split_adds_up_to_the_client_latency():
    run = {"mean_ms": 12.0, "ts_ms": 9.0, "queue_ms": 5.0, "handler_ms": 2.5}
    parts = split(run, model_ms=0.5)
    assert parts == {
        "outside_ts": 3.0,
        "queue": 5.0,
        "worker_ipc": 1.5,
        "handler": 2.0,
        "model": 0.5,
    }
    assert sum(parts.values()) == pytest.approx(run["mean_ms"])
    assert split({"mean_ms": 1.0}, 0.5) == {}


def in_process(p50_b1: float, per_s: dict[int, float]) -> dict:
    batches = {str(b): {"p50_ms": b * 1000 / v, "per_s": v} for b, v in per_s.items()}
    batches["1"]["p50_ms"] = p50_b1
    return {"batches": batches, "handler_p50_ms_batch1": p50_b1 + 0.7}


@pytest.fixture
def result(recorded) -> dict:
    """A profile.json-shaped result: the recorded runs as a batching and a batch-1 setting."""
    settings = [
        Setting("threads1", "x", {"OMP_NUM_THREADS": "1"}),
        Setting("threads1_batch1", "y", {"OMP_NUM_THREADS": "1"}, 1, 0),
    ]
    runs = []
    for s, scale in ((settings[0], 1.0), (settings[1], 0.1)):
        for payloads in ("pool", "example"):
            for users, prefix in recorded.items():
                run = read_run(prefix, "mutag_gcn")
                run["rps"] *= scale
                run.update(
                    users=users,
                    model="mutag_gcn",
                    setting=s.name,
                    payloads=payloads,
                    batch_size=s.batch_size or 16,
                    ts_ms=run["mean_ms"] - 1.0,
                    queue_ms=0.5,
                    handler_ms=1.0,
                    server_cores=0.9,
                    machine_busy_cores=1.2,
                )
                runs.append(run)
    from dataclasses import asdict

    return {
        "command": "make profile",
        "machine": {
            "cpu": "test",
            "cores": 2,
            "memory_gib": 1,
            "python": "3.11",
            "torch": "t",
            "torchserve": "0.12.0",
            "locust": "l",
        },
        "started": "a",
        "finished": "b",
        "load_average_before": [0.1, 0.1, 0.1],
        "load_average_after": [0.2, 0.2, 0.2],
        "users": [1, 4],
        "seconds_per_run": 4,
        "settings": [asdict(s) for s in settings],
        "in_process": {"mutag_gcn": {"1": in_process(0.8, {1: 1250, 16: 8000})}},
        "ready": {"threads1": {"seconds": 12.5, "models": ["mutag_gcn"]}},
        "runs": runs,
    }


def test_goals_compare_served_with_in_process(result):
    g = goals(result)
    p1 = {r["setting"]: r for r in g["P1"]}
    one_user = next(r for r in result["runs"] if r["users"] == 1 and r["payloads"] == "example")
    assert p1["threads1"]["gap_ms"] == pytest.approx(one_user["exact"]["p50_ms"] - 0.8, abs=1e-3)
    assert p1["threads1"]["met"] == (p1["threads1"]["gap_ms"] <= 3)
    p2 = {r["setting"]: r for r in g["P2"]}
    best = max(
        (r for r in result["runs"] if r["setting"] == "threads1" and r["payloads"] == "example"),
        key=lambda r: r["rps"],
    )
    assert p2["threads1"]["in_process_batch"] == 16  # the configured batch size
    assert p2["threads1"]["ratio"] == pytest.approx(best["rps"] / 8000, abs=1e-4)
    assert p2["threads1_batch1"]["in_process_batch"] == 1
    assert p2["threads1"]["met"] == (p2["threads1"]["ratio"] >= 0.3)
    [lift] = g["P2_batching"]
    assert (lift["setting"], lift["vs"]) == ("threads1", "threads1_batch1")
    assert lift["lift"] == pytest.approx(10.0, abs=0.01) and lift["met"]
    assert g["P3"] == [
        {"setting": "threads1", "seconds": 12.5, "models": ["mutag_gcn"], "met": True}
    ]


def test_report_has_tables_and_plots(result, tmp_path):
    text = report(result, tmp_path / "plots")
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["cpu.png", "mutag_gcn_latency.png", "mutag_gcn_split.png"]
    assert all((tmp_path / "plots" / p).stat().st_size > 5000 for p in pngs)
    for heading in (
        "## Summary",
        "**P1**",
        "**P2**",
        "**P3**",
        "## Where the time goes",
        "### mutag_gcn",
    ):
        assert heading in text
    assert "| mutag_gcn | threads1_batch1 | 4 |" in text


def test_log_tail_reads_each_batch_once(tmp_path):
    log = tmp_path / "ts_log.log"
    log.write_text("old [METRICS]HandlerTime.Milliseconds:99.0|#ModelName:m,Level:Model|x\n")
    line = "W-9000-m_1.0-stdout result=[METRICS]{}.Milliseconds:{}|#ModelName:{},Level:Model|#{}\n"
    with LogTail(log, "m") as tail, open(log, "a") as f:
        for i, (key, ms, model) in enumerate(
            [
                ("HandlerTime", 2.0, "m"),
                ("PredictionTime", 2.5, "m"),
                ("HandlerTime", 4.0, "m"),
                ("HandlerTime", 50.0, "other"),
            ]
        ):
            text = line.format(key, ms, model, f"hostname:vm,1,{i}")
            f.write(text + text)  # TorchServe's default log config writes each line twice
    assert tail.values == {"HandlerTime": [2.0, 4.0], "PredictionTime": [2.5]}
    assert tail.mean("HandlerTime") == 3.0


def test_a_later_pass_adds_models_and_replaces_only_its_own(result):
    import copy

    from benchmarks.profile.merge import merge

    later = copy.deepcopy(result)
    for run in later["runs"]:
        run["model"] = "cora_gcn"
    later["in_process"] = {"cora_gcn": later["in_process"].pop("mutag_gcn")}
    later["started"] = "c"
    merged = merge(result, later)
    assert {r["model"] for r in merged["runs"]} == {"mutag_gcn", "cora_gcn"}
    assert len(merged["runs"]) == 2 * len(result["runs"])
    assert set(merged["in_process"]) == {"mutag_gcn", "cora_gcn"}
    assert [p["models"] for p in merged["passes"]] == [["mutag_gcn"], ["cora_gcn"]]
    again = merge(merged, later)  # measuring cora_gcn again replaces its runs
    assert len(again["runs"]) == len(merged["runs"]) and len(again["passes"]) == 3
