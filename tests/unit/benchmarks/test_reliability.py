"""The reliability benchmarks' own logic (benchmarks/faults.py, overload.py, soak.py): the
worst requests stay within each model's limits, and the figures come out of known records."""

from pathlib import Path

import pytest
import yaml

from benchmarks.common import slope_per_min
from benchmarks.faults import worst_request
from benchmarks.overload import analyse
from benchmarks.soak import latency_bins
from serve.config import CONFIG, read_properties
from train.core.registry import served_models, spec


@pytest.mark.parametrize("name", served_models())
def test_worst_request_is_the_largest_the_limits_admit_and_no_larger(name):
    model = spec(name)
    config = yaml.safe_load(model.model_config.read_text()).get("handler") or {}
    body, ctype, what, n = worst_request(Path(model.handler).name, config)
    # Within the handler's byte limit and TorchServe's max_request_size: a 413 would
    # measure nothing. As many instances as max_instances and the byte limit allow.
    limit = config.get("max_body_bytes", 8 * 2**20)
    assert len(body) <= limit
    assert len(body) <= int(read_properties(CONFIG)["max_request_size"])
    assert ctype == "application/json"
    if b'"instances"' in body:
        most = config.get("max_instances", 64)
        assert n == most or len(body) * (n + 1) / n > limit, what
    else:
        assert n == 1


def test_rss_slope_is_a_least_squares_line_after_the_warm_up():
    # 60 s of a 50 MiB warm-up climb, then 2 MiB/min with +-0.5 MiB of alternating noise.
    samples = [(t, 200 + 50 * t / 60) for t in range(0, 60, 5)]
    samples += [(t, 250 + 2 * (t - 60) / 60 + (0.5 if t % 10 else -0.5)) for t in range(60, 600, 5)]
    assert slope_per_min(samples, after_s=60) == pytest.approx(2.0, abs=0.05)
    assert slope_per_min(samples, after_s=0) > 2.5  # the climb is why warm-up is left out
    assert slope_per_min(samples[:14], after_s=60) is None  # fewer than 3 points


def test_latency_bins_split_requests_by_end_time(tmp_path):
    log = tmp_path / "requests.csv"
    rows = ["end_s,name,ms,failed"]
    rows += [f"{1000 + i * 0.1:.3f},m,{10 + i % 10},0" for i in range(100)]  # 0-10 s
    rows += [f"{1010 + i * 0.1:.3f},m,{100 + i % 10},{int(i == 5)}" for i in range(100)]
    log.write_text("\n".join(rows) + "\n")
    bins = latency_bins(log, t0=1000.0, bin_s=10.0)
    assert [b["requests"] for b in bins] == [100, 100]
    assert [b["failures"] for b in bins] == [0, 1]
    assert bins[0]["p99_ms"] < 20 < 100 <= bins[1]["p50_ms"]


def test_overload_analysis_shed_ratio_admitted_p99_and_recovery():
    phases = [("baseline", 10, 10), ("overload", 20, 10), ("recovery", 10, 10)]
    recs = [("baseline", i / 10, i / 10 + 0.05, 200) for i in range(100)]
    # Overload: every other request shed at once with 503; the admitted wait 1 s.
    recs += [
        ("overload", 10 + i / 20, 10 + i / 20 + (1.0 if i % 2 else 0.01), 200 if i % 2 else 503)
        for i in range(200)
    ]
    # Recovery: the first second still slow (the queue drains), then 50 ms again.
    recs += [
        ("recovery", 20 + i / 10, 20 + i / 10 + (0.8 if i < 10 else 0.05), 200) for i in range(100)
    ]
    out = analyse(recs, phases)
    assert out["shed_ratio"] == 0.5 and out["shed_codes"] == {"503": 100}
    assert out["admitted_p99_ms"] == pytest.approx(1000, abs=1)
    assert out["shed_p99_ms"] == pytest.approx(10, abs=1)
    assert out["recovery_s"] == pytest.approx(1.7, abs=0.01)  # request 9 ends at 20.9 + 0.8
    assert out["recovery_failed"] == 0
    assert out["recovery_slow"] == 10 and out["recovery_p99_s"] == 1.0  # bin 0 slow, bin 1 back


def test_one_late_slow_request_sets_recovery_s_but_not_the_binned_recovery():
    phases = [("baseline", 10, 10), ("overload", 20, 10), ("recovery", 10, 10)]
    recs = [("baseline", i / 10, i / 10 + 0.05, 200) for i in range(100)]
    recs += [("overload", 10 + i / 10, 10 + i / 10 + 0.05, 503) for i in range(100)]
    recs += [
        ("recovery", 20 + i / 10, 20 + i / 10 + (2.0 if i == 90 else 0.05), 200) for i in range(100)
    ]
    out = analyse(recs, phases)
    assert out["recovery_s"] == pytest.approx(11.0, abs=0.01)  # the one request at 29 s + 2 s
    assert out["recovery_slow"] == 1
    assert out["recovery_p99_s"] == 10.0  # its bin (9) has 10 requests: its p99 is that one
