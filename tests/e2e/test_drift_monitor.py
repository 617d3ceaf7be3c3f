"""The real torchserve and the real monitor: clean Cora traffic leaves the drift gauges at 0,
the same neighbourhoods with most words masked out set them to 1.

cora_gcn is a tiny run of this session, exported with its reference profile; its handler writes
the payload log that the monitor (`python -m monitor`, started as `make serve` starts it) tails.
"""

import random
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve.archive import build_mar
from serve.config import free_port
from serve.monitor import MonitorProcess, start_monitor
from serve.server import start
from tests.conftest import mirror
from train.graph.data import load_planetoid
from train.graph.requests import planetoid_request

pytestmark = pytest.mark.e2e
MODEL = "cora_gcn"
WINDOW = 100


def gauges(mon: MonitorProcess) -> dict[tuple[str, str], float]:
    """(metric, signal) -> value for MODEL."""
    out = {}
    for family in text_string_to_metric_families(mon.metrics()):
        for s in family.samples:
            if s.labels.get("model") == MODEL:
                out[(s.name, s.labels.get("signal", ""))] = s.value
    return out


def wait_for_check(mon: MonitorProcess, checks: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        g = gauges(mon)
        if g.get(("bundle_drift_checks_total", ""), 0) >= checks:
            return g
        assert time.monotonic() < deadline, f"no drift check {checks} within {timeout} s: {g}"
        time.sleep(0.5)


def masked(request: dict, rng: random.Random, keep: float = 0.1) -> dict:
    """The same neighbourhood with about 90% of each paper's words dropped (at least one kept)."""
    rows = [[w for w in row if rng.random() < keep] or row[:1] for row in request["x_sparse"]]
    return {**request, "x_sparse": rows}


@pytest.fixture(scope="module")
def served(tiny_artifacts, tmp_path_factory):
    if mirror() is None:
        pytest.skip("DATA_MIRROR is not set")
    root = tmp_path_factory.mktemp("drift")
    store, payload = root / "store", root / "payload"
    build_mar(MODEL, tiny_artifacts, store)
    server = start(store, root / "ts", [MODEL], artifacts=tiny_artifacts, payload_dir=payload)
    options = ["--window", str(WINDOW), "--every", str(WINDOW), "--interval", "3600"]
    options += ["--alpha", "0.01", "--poll", "0.2"]
    try:
        mon = start_monitor(store, payload, root / "logs", free_port(), *options)
    except BaseException:
        server.stop()
        raise
    yield server, mon
    mon.stop()
    server.stop()


def test_masked_features_move_the_drift_gauges(served, data_root):
    server, mon = served
    raw = load_planetoid("Cora", data_root, mirror(), normalize=False)[0]
    rng = random.Random(0)
    centers = rng.sample(range(raw.num_nodes), 2 * WINDOW)
    for c in centers[:WINDOW]:
        assert server.predict(MODEL, planetoid_request(raw, c))[0] == 200
    clean = wait_for_check(mon, 1)
    assert clean[("bundle_payload_log_records_total", "")] == WINDOW
    signals = {sig for (name, sig) in clean if name == "bundle_drift_detected"}
    assert {"embedding", "prediction", "nodes", "degree", "feature_density"} <= signals
    assert max(clean[("bundle_drift_detected", s)] for s in signals) == 0.0, clean

    for c in centers[WINDOW:]:
        assert server.predict(MODEL, masked(planetoid_request(raw, c), rng))[0] == 200
    shifted = wait_for_check(mon, 2)
    assert shifted[("bundle_payload_log_records_total", "")] == 2 * WINDOW
    assert shifted[("bundle_drift_detected", "feature_density")] == 1.0
    assert shifted[("bundle_drift_detected", "embedding")] == 1.0
    p, threshold = (
        shifted[("bundle_drift_p_value", "embedding")],
        shifted[("bundle_drift_threshold", "embedding")],
    )
    assert p < threshold == pytest.approx(0.01 / len(signals))
    # The graph's shape did not change, only its words: those signals stay quiet.
    assert shifted[("bundle_drift_detected", "degree")] == 0.0
