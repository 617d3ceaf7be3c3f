"""serve/metrics.py on real Prometheus text: a /metrics scrape of TorchServe 0.12 serving a tiny
cora_gcn after three requests (tests/unit/data/torchserve_metrics.txt)."""

from pathlib import Path

import pytest

from serve.metrics import BACKEND_US, QUEUE_US, REQUESTS, parse, per_model, series

TEXT = (Path(__file__).parents[1] / "data" / "torchserve_metrics.txt").read_text()


def test_per_model_reads_frontend_counters_and_backend_gauges():
    values = per_model(parse(TEXT), "cora_gcn")
    assert values[REQUESTS] == 3.0
    assert values[BACKEND_US] == pytest.approx(261418.085)
    assert values[QUEUE_US] == pytest.approx(3718.109)
    # Gauges carry the model as ModelName, counters as model_name: both are found.
    assert values["HandlerTime"] == pytest.approx(29.09)
    assert values["PredictionTime"] == pytest.approx(29.48)
    assert per_model(parse(TEXT), "mutag_gcn") == {}


def test_host_metrics_belong_to_no_model():
    samples = parse(TEXT)
    host = [s for s in samples if s.name == "CPUUtilization"]
    assert len(host) == 1 and host[0].model() is None and host[0].value == 100.0
    # Two workers' load times: one series each.
    assert len([s for s in samples if s.name == "WorkerLoadTime"]) == 2


def test_series_keys_name_each_labelled_series():
    found = series(parse(TEXT), "ts_inference_requests", "ts_queue_latency")
    assert found == {
        'ts_inference_requests_total{model_name="cora_gcn",model_version="default",'
        'hostname="vm"}': 3.0,
        'ts_queue_latency_microseconds_total{model_name="cora_gcn",model_version="default",'
        'hostname="vm"}': pytest.approx(3718.109),
    }


def test_counters_without_samples_and_bad_text():
    # TYPE lines with no sample (Requests4XX before any 4xx) add nothing.
    assert not [s for s in parse(TEXT) if s.name.startswith("Requests4XX")]
    with pytest.raises(ValueError):
        parse("ts_inference_requests_total{model_name= 1\n")
