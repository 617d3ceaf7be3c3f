"""One scrape of TorchServe's /metrics (metrics_mode=prometheus), parsed by prometheus_client.

TorchServe labels its frontend counters (ts_inference_requests_total, ts_*_microseconds) with
`model_name` and its backend gauges (HandlerTime, PredictionTime) with `ModelName`.
"""

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from serve.client import http

MODEL_LABELS = ("model_name", "ModelName")
# The frontend's per-model counters, by prometheus_client's names: it gives every counter the
# OpenMetrics `_total` suffix (ts_inference_latency_microseconds -> ..._microseconds_total).
REQUESTS = "ts_inference_requests_total"
BACKEND_US = "ts_inference_latency_microseconds_total"
QUEUE_US = "ts_queue_latency_microseconds_total"


@dataclass(frozen=True)
class Sample:
    """One line of the exposition: metric name, labels, value."""

    name: str
    labels: dict[str, str]
    value: float

    @property
    def key(self) -> str:
        """`name{label="value",...}`, the series as the exposition writes it."""
        labels = ",".join(f'{k}="{v}"' for k, v in self.labels.items())
        return f"{self.name}{{{labels}}}" if labels else self.name

    def model(self) -> str | None:
        return next((self.labels[k] for k in MODEL_LABELS if k in self.labels), None)


def parse(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition."""
    return [
        Sample(s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def scrape(metrics_url: str, timeout: float = 10) -> list[Sample]:
    """GET <metrics_url>/metrics (the metrics API needs no token) and parse it."""
    status, body = http(f"{metrics_url.rstrip('/')}/metrics", timeout=timeout)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}: {body[:200]!r}")
    return parse(body.decode())


def per_model(samples: list[Sample], model: str) -> dict[str, float]:
    """{metric name: value} of one model's series (a model with one version has one each)."""
    return {s.name: s.value for s in samples if s.model() == model}


def series(samples: list[Sample], *prefixes: str) -> dict[str, float]:
    """{series key: value} of every series whose metric name starts with one of `prefixes`."""
    return {s.key: s.value for s in samples if s.name.startswith(prefixes)}
