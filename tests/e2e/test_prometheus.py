"""A real Prometheus on free ports scrapes the e2e torchserve (every model) and the real drift
monitor (`python -m monitor`, with the READY-workers collector, as `make serve` starts it): the
model metrics arrive, every dashboard expression returns data, and the alert rules evaluate.
The drift, 5xx and no-READY-worker alerts go pending on real shifted traffic and real faults."""

import json
import math
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.grafana import dashboard
from serve import prometheus
from serve.client import exchange
from serve.config import free_port
from serve.metrics import scrape
from serve.monitor import MonitorProcess, start_monitor
from train.core.registry import experiment_config, spec
from train.core.shifts import Case, load_hook

pytestmark = pytest.mark.e2e
# The drift part: this model's photos, clean and then blurred and darkened (its `shifts` hook),
# tested by the monitor in windows of WINDOW records.
DRIFT_MODEL = "flowers_cnn"
WINDOW = 30


def until(check: Callable[[], Any], timeout: float = 60, every: float = 1) -> Any:
    """Polls `check` until it returns something truthy; fails with its last value."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"not true after {timeout:.0f}s: {last!r}")


@pytest.fixture(scope="module")
def monitor(every_model_server, every_model_store, tmp_path_factory):
    """The drift monitor over the e2e server's payload logs, exporting READY workers too; a
    window is tested every WINDOW new records (no timer), at a family-wise level of 0.01."""
    srv = every_model_server
    assert srv.payload_dir is not None
    options = ["--window", str(WINDOW), "--every", str(WINDOW), "--min-records", str(WINDOW)]
    options += ["--interval", "3600", "--alpha", "0.01", "--poll", "0.2"]
    options += ["--management", srv.management]
    if srv.key_file is not None:
        options += ["--key-file", str(srv.key_file)]
    logs = tmp_path_factory.mktemp("monitor")
    mon = start_monitor(every_model_store, srv.payload_dir, logs, free_port(), *options)
    yield mon
    mon.stop()


@pytest.fixture(scope="module")
def prom(every_model_server, monitor, tmp_path_factory):
    targets = {"torchserve": every_model_server.metrics, "monitor": monitor.url.rsplit("/", 1)[0]}
    p = prometheus.start(tmp_path_factory.mktemp("prometheus"), targets, interval="1s")
    yield p
    p.stop()


def send(srv, name: str, body: bytes, ctype: str, headers: dict | None = None) -> int:
    status, _, _ = exchange(
        f"{srv.inference}/predictions/{name}",
        srv.token(),
        "POST",
        body,
        {"Content-Type": ctype, **(headers or {})},
        timeout=60,
    )
    return status


def traffic(srv, examples_dir, rounds: int = 2) -> None:
    """Each model's real example; QM9's with forces, so the force histogram has data too."""
    index = json.loads((examples_dir / "index.json").read_text())
    for _ in range(rounds):
        for name, entry in index.items():
            body = (examples_dir / entry["file"]).read_bytes()
            headers = {"X-Forces": "true"} if name == "qm9_et" else {}
            assert send(srv, name, body, entry["content_type"], headers) == 200, name
        # One refused request (400, field `atoms`): the error panel has a series.
        assert (
            send(srv, "mutag_gcn", b'{"atoms": ["Xe"], "edge_index": [[], []]}', "application/json")
            == 400
        )


def finite(result: list[dict]) -> bool:
    return bool(result) and all(math.isfinite(float(r["value"][1])) for r in result)


@pytest.fixture(scope="module")
def scraped(prom, every_model_server, examples_dir):
    """Traffic before and after Prometheus's first scrape of the model metrics (a rate needs
    two samples of a counter that moved)."""
    srv = every_model_server
    traffic(srv, examples_dir)
    until(lambda: prom.query("bundle_inputs_total"))
    time.sleep(2)
    traffic(srv, examples_dir)
    until(lambda: finite(prom.query(f"sum(rate(bundle_inputs_total{dashboard.W}))")))
    return prom


def test_both_targets_are_scraped(scraped):
    health = {t["labels"]["job"]: t["health"] for t in scraped.targets()}
    assert health == {"torchserve": "up", "monitor": "up"}


def test_prometheus_holds_the_model_metrics_torchserve_exports(
    scraped, every_model_server, examples_dir
):
    """With no traffic in between, Prometheus's last sample equals a direct scrape."""
    time.sleep(3)  # a few scrape intervals after the last request
    direct = {
        s.labels["ModelName"]: s.value
        for s in scrape(every_model_server.metrics)
        if s.name == "bundle_inputs_total"
    }
    stored = {
        r["metric"]["ModelName"]: float(r["value"][1]) for r in scraped.query("bundle_inputs_total")
    }
    assert stored == direct
    assert set(json.loads((examples_dir / "index.json").read_text())) <= set(stored)


def test_every_rule_evaluates_without_error(scraped):
    rules = until(lambda: (r := scraped.rules()) and all(x["health"] != "unknown" for x in r) and r)
    assert len(rules) == 6
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def alert_states(prom) -> dict[tuple[str, str], str]:
    """{(alertname, model or model_name or ""): state} of the pending and firing alerts."""
    out = {}
    for a in prom.alerts():
        labels = a["labels"]
        out[(labels["alertname"], labels.get("model", labels.get("model_name", "")))] = a["state"]
    return out


def test_latency_rule_expression_has_a_value_per_served_model(scraped, examples_dir):
    rule = next(r for r in scraped.rules() if r["name"] == "ModelLatencyHigh")
    expr, bound = rule["query"].rsplit(">", 1)
    got = {r["metric"]["model_name"]: float(r["value"][1]) for r in scraped.query(expr)}
    served = set(json.loads((examples_dir / "index.json").read_text()))
    assert served <= set(got) and all(0 < v < 60_000 for v in got.values()), got
    # On a loaded machine a slow model's mean may pass the bound: the alert must agree with the
    # expression's values (give or take what one evaluation interval moves a 5-minute mean).
    pending = {m for (name, m) in alert_states(scraped) if name == "ModelLatencyHigh"}
    assert all(got[m] > 0.8 * float(bound) for m in pending), (pending, got)
    assert all(m in pending for m, v in got.items() if v > 1.2 * float(bound)), (pending, got)
    print(f"mean latency (ms) per model: {got}; ModelLatencyHigh pending for {sorted(pending)}")


def test_5xx_answers_put_the_error_ratio_alert_pending(scraped, every_model_server, examples_dir):
    # A model scaled to no worker: TorchServe answers its valid requests 503 ("has no worker to
    # serve inference request"), a real 5xx, in Requests5XX.
    entry = json.loads((examples_dir / "index.json").read_text())["mutag_gcn"]
    body = (examples_dir / entry["file"]).read_bytes()
    client = every_model_server.client()
    desc = client.describe("mutag_gcn")
    lo, hi = desc["minWorkers"], desc["maxWorkers"]
    assert ("ServerErrorRatioHigh", "") not in alert_states(scraped)  # no 5xx so far
    client.call("PUT", "/models/mutag_gcn?min_worker=0&max_worker=0&synchronous=true")
    try:
        # TorchServe exports no Requests5XX series before its first 5xx, and rate() cannot see
        # the step from no series to its first value: one 5xx first, seen by Prometheus, then
        # the rest.
        codes = [send(every_model_server, "mutag_gcn", body, entry["content_type"])]
        until(lambda: scraped.query("Requests5XX"))
        codes += [
            send(every_model_server, "mutag_gcn", body, entry["content_type"]) for _ in range(20)
        ]
        assert set(codes) == {503}, codes
        state = until(lambda: alert_states(scraped).get(("ServerErrorRatioHigh", "")), timeout=60)
        assert state in ("pending", "firing")
    finally:
        client.call("PUT", f"/models/mutag_gcn?min_worker={lo}&max_worker={hi}&synchronous=true")
    assert send(every_model_server, "mutag_gcn", body, entry["content_type"]) == 200


def monitored(mon: MonitorProcess, metric: str, model: str = DRIFT_MODEL) -> dict[str, float]:
    """signal (or "") -> value of one of the monitor's metrics for `model`, read directly."""
    return {
        s.labels.get("signal", ""): s.value
        for family in text_string_to_metric_families(mon.metrics())
        for s in family.samples
        if s.name == metric and s.labels.get("model") == model
    }


def records_read(mon: MonitorProcess) -> float:
    return monitored(mon, "bundle_payload_log_records_total").get("", 0.0)


def caught_up(mon: MonitorProcess) -> bool:
    """Whether the monitor read no new record of DRIFT_MODEL for 1.5 s."""
    before = records_read(mon)
    time.sleep(1.5)
    return records_read(mon) == before


def feed(srv, mon: MonitorProcess, cases: list[Case], records: int) -> int:
    """Sends `cases` round-robin until the monitor has read `records` more of DRIFT_MODEL's
    payload records (the handler logs a sampled share, payload_log_rate); returns requests sent.

    With --every WINDOW and 2 x WINDOW new records, the monitor's last test was on a window of
    these records only, whatever was left over from earlier traffic."""
    start, sent = records_read(mon), 0
    deadline = time.monotonic() + 300
    while records_read(mon) < start + records:
        assert time.monotonic() < deadline, f"{records_read(mon) - start} of {records} read"
        for case in cases[sent % len(cases) :][:10]:
            assert send(srv, DRIFT_MODEL, case.body, case.content_type) == 200
            sent += 1
        time.sleep(0.3)  # the payload log's writer thread, then the monitor's poll
    return sent


def settled(prom, mon: MonitorProcess) -> None:
    """Until Prometheus has scraped the monitor's latest test of DRIFT_MODEL."""
    checks = monitored(mon, "bundle_drift_checks_total")[""]
    query = f'bundle_drift_checks_total{{model="{DRIFT_MODEL}"}} >= {checks}'
    until(lambda: prom.query(query), timeout=30)


def test_shifted_photos_raise_the_drift_gauges_and_the_drift_alert(
    scraped, every_model_server, monitor
):
    """Clean held-out photos: no signal drifts and no drift alert. The same photos, half blurred
    and half darkened: the sharpness and brightness p-values fall, bundle_drift_detected goes
    from 0 to 1 in Prometheus and ModelDriftSustained goes pending (its `for` is 2 minutes)."""
    srv, mon = every_model_server, monitor
    model = spec(DRIFT_MODEL)
    assert model.shifts is not None
    hook = load_hook(model.shifts)
    shifts = hook(experiment_config(model.experiment).data, 80, random.Random(0))
    until(lambda: caught_up(mon))  # the records of earlier tests in this session
    feed(srv, mon, shifts.clean, 2 * WINDOW)
    settled(scraped, mon)
    detected = f'max(bundle_drift_detected{{model="{DRIFT_MODEL}"}})'
    assert float(scraped.query(detected)[0]["value"][1]) == 0.0, monitored(
        mon, "bundle_drift_p_value"
    )
    assert ("ModelDriftSustained", DRIFT_MODEL) not in alert_states(scraped)
    clean_p = monitored(mon, "bundle_drift_p_value")

    blurred = shifts.shifts["blur"].make(4.0)
    darkened = shifts.shifts["darken"].make(0.45)
    mixed = [c for pair in zip(blurred, darkened) for c in pair]
    feed(srv, mon, mixed, 2 * WINDOW)
    settled(scraped, mon)
    assert float(scraped.query(detected)[0]["value"][1]) == 1.0
    shifted_p = monitored(mon, "bundle_drift_p_value")
    threshold = monitored(mon, "bundle_drift_threshold")
    # Each of the two shifts is half of the window: both signals move, and the
    # tiny run's 35-photo reference is enough for at least one to pass its threshold.
    watched = ("brightness", "sharpness")
    assert all(shifted_p[s] < clean_p[s] for s in watched), (clean_p, shifted_p)
    assert any(shifted_p[s] < threshold[s] for s in watched), (shifted_p, threshold)
    state = until(lambda: alert_states(scraped).get(("ModelDriftSustained", DRIFT_MODEL)))
    assert state in ("pending", "firing")
    print(f"{DRIFT_MODEL} p-values clean {clean_p}, shifted {shifted_p}; alert {state}")


@pytest.mark.parametrize("panel", dashboard.PANELS, ids=lambda p: p.title)
def test_every_dashboard_expression_returns_data(scraped, panel):
    """After the 5xx and drift tests above (file order), so that Requests5XX and the drift
    gauges have series."""
    for expr, _ in panel.targets:
        result = until(lambda e=expr: finite(scraped.query(e)) and scraped.query(e), timeout=30)
        assert all(math.isfinite(float(r["value"][1])) for r in result), expr


def test_a_model_without_workers_puts_the_ready_alert_pending(scraped, every_model_server):
    client = every_model_server.client()
    desc = client.describe("mutag_gcn")
    lo, hi = desc["minWorkers"], desc["maxWorkers"]
    client.call("PUT", "/models/mutag_gcn?min_worker=0&max_worker=0&synchronous=true")
    try:
        until(lambda: scraped.query('bundle_model_ready_workers{model="mutag_gcn"} == 0'))
        state = until(lambda: alert_states(scraped).get(("ModelNoReadyWorker", "mutag_gcn")))
        assert state in ("pending", "firing")
        assert ("ModelNoReadyWorker", "cora_gcn") not in alert_states(scraped)
    finally:
        client.call("PUT", f"/models/mutag_gcn?min_worker={lo}&max_worker={hi}&synchronous=true")
    until(lambda: scraped.query('bundle_model_ready_workers{model="mutag_gcn"} >= 1'))
