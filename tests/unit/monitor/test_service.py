"""The monitor in-process: references from .mar files, payload logs tailed, gauges exported; and
the real `python -m monitor` process on a free port."""

import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.reference import Reference
from monitor.service import Monitor, Settings
from online.lineage import ASSESS_EVENT, Lineage
from serve.config import ROOT, free_port
from serve.monitor import start_monitor
from tests.unit.monitor.test_drift import LABELS, records


def store_with(tmp_path: Path) -> Path:
    """A store holding one 'toy.mar' with a reference profile, as serve/archive.py packs it."""
    ref_dir, store = tmp_path / "art", tmp_path / "store"
    Reference.from_records("toy", records(np.random.default_rng(0), 300), LABELS).save(ref_dir)
    store.mkdir()
    with zipfile.ZipFile(store / "toy.mar", "w") as mar:
        for name in ("reference.json", "reference.npz"):
            mar.write(ref_dir / name, name)
    with zipfile.ZipFile(store / "old.mar", "w") as mar:  # exported before references existed
        mar.writestr("meta.json", "{}")
    return store


def append(payload: Path, recs: list[dict], pid: int = 123) -> None:
    (payload / "toy").mkdir(parents=True, exist_ok=True)
    with open(payload / "toy" / f"{pid}.jsonl", "a") as f:
        for r in recs:
            f.write(json.dumps({"time": 0.0, "model": "toy", "version": "1.0", **r}) + "\n")


def gauges(text: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, s.labels.get("model", ""), s.labels.get("signal", ""))] = s.value
    return out


def test_a_shifted_window_sets_the_gauges(tmp_path):
    from prometheus_client import generate_latest

    payload = tmp_path / "payload"
    monitor = Monitor(store_with(tmp_path), payload, Settings(window=100, every=50, n_perm=200))
    monitor.refresh()
    assert list(monitor.watches) == ["toy"]
    rng = np.random.default_rng(5)
    append(payload, records(rng, 100))
    assert set(monitor.step()) == {"toy"}
    g = gauges(generate_latest(monitor.metrics.registry).decode())
    assert g[("bundle_payload_log_records_total", "toy", "")] == 100
    clean = [g[("bundle_drift_detected", "toy", s)] for s in ("embedding", "nodes", "prediction")]
    assert max(clean) == 0.0
    assert g[("bundle_drift_threshold", "toy", "embedding")] == 0.05 / 5
    append(payload, records(rng, 100, shift=1.0), pid=456)  # a second worker's file
    monitor.step()
    g = gauges(generate_latest(monitor.metrics.registry).decode())
    assert g[("bundle_drift_detected", "toy", "embedding")] == 1.0
    assert (
        g[("bundle_drift_p_value", "toy", "embedding")]
        < g[("bundle_drift_threshold", "toy", "embedding")]
    )
    assert g[("bundle_payload_log_records_total", "toy", "")] == 200
    assert g[("bundle_drift_window_records", "toy", "")] == 100
    assert monitor.status()["toy"]["drifted"]


def test_no_test_before_enough_records_or_time(tmp_path):
    payload = tmp_path / "payload"
    settings = Settings(every=50, interval=30.0, min_records=30, n_perm=100)
    monitor = Monitor(store_with(tmp_path), payload, settings)
    monitor.refresh()
    append(payload, records(np.random.default_rng(6), 40))
    t0 = monitor.watches["toy"].last_check
    assert monitor.step(now=t0 + 1) == {}  # 40 new records < every, 1 s < interval
    assert set(monitor.step(now=t0 + 31)) == {"toy"}  # the interval passed with new records
    assert monitor.step(now=t0 + 62) == {}  # the interval passed, but nothing new
    append(payload, records(np.random.default_rng(7), 50))
    assert set(monitor.step(now=t0 + 63)) == {"toy"}  # `every` new records: at once


def test_the_monitor_process_serves_its_gauges(tmp_path):
    payload = tmp_path / "payload"
    append(payload, records(np.random.default_rng(8), 60, shift=1.0))
    store = store_with(tmp_path)
    # An online workspace as the QM9 loop leaves it: one served version scored on a shard.
    online = Lineage(tmp_path / "online")
    online.append(
        {
            "model_version": 1,
            "served_as": "qm9_et/online-1",
            "promoted": True,
            "metrics": {"val_mae_mev": 150.0},
            "trigger": {"numbers": {"fired_by": ["growth"]}},
        }
    )
    online.log(ASSESS_EVENT, model="qm9_et", model_version=1, shard="s1", n=1000, mae_mev=171.5)
    mon = start_monitor(
        store,
        payload,
        tmp_path / "logs",
        free_port(),
        "--every",
        "50",
        "--poll",
        "0.2",
        "--n-perm",
        "200",
        "--online-workdir",
        str(tmp_path / "online"),
    )
    try:
        import time

        deadline = time.monotonic() + 60
        while True:
            g = gauges(mon.metrics())
            if (
                g.get(("bundle_drift_detected", "toy", "embedding")) == 1.0
                or time.monotonic() > deadline
            ):
                break
            time.sleep(0.5)
        assert g[("bundle_drift_detected", "toy", "embedding")] == 1.0
        assert g[("bundle_payload_log_records_total", "toy", "")] == 60
        assert g[("bundle_online_realised_mae_mev", "qm9_et", "")] == 171.5
        assert g[("bundle_online_val_mae_mev", "qm9_et", "")] == 150.0
    finally:
        assert mon.stop() is not None


def test_the_evidently_report_of_a_shifted_window(tmp_path):
    """`make drift-report`'s command, in .venv-report (make test creates it)."""
    python = ROOT / ".venv-report" / "bin" / "python"
    if not python.exists():
        pytest.skip("no .venv-report: run `make report-venv`")
    payload = tmp_path / "payload"
    append(payload, records(np.random.default_rng(9), 120, shift=1.0))
    cmd = [str(python), "-m", "monitor.report", "toy", "--store", str(store_with(tmp_path))]
    cmd += ["--payload-dir", str(payload), "--out", str(tmp_path / "out")]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=300)
    report = json.loads((tmp_path / "out" / "toy.json").read_text())
    drift = {
        m["metric_name"].split("column=")[1].split(",")[0]: m["value"]
        for m in report["metrics"]
        if m["metric_name"].startswith("ValueDrift")
    }
    assert drift["nodes"] < 0.05 and drift["brightness"] < 0.05  # the shifted statistics
    assert drift["mix[0]"] > 0.001  # unchanged by the shift
    assert "embedding_pc1" in drift and "prediction" in drift
    assert (tmp_path / "out" / "toy.html").stat().st_size > 10_000
