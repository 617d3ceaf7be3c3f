"""In-process handler harness: the real ts.context.Context and a real TorchScript model dir."""

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

# The bundle's metrics config (config.properties `metrics_config`), which declares the model
# metrics the handlers emit (handlers/model_metrics.py).
METRICS_YAML = str(Path(__file__).resolve().parents[2] / "metrics.yaml")
JSON = {"Content-Type": "application/json"}
# The frontend's own pattern for a worker's metric line (org.pytorch.serve.metrics.Metric in
# TorchServe 0.12's model-server.jar): no Python parser of that line exists to reuse.
METRIC_LINE = re.compile(
    r"\[METRICS\]([\w\s]+)\.([\w\s]+):([0-9\-,.e]+)\|#([^|]*)(\|#type:([^|,]+))?"
    r"\|#hostname:([^,]+),([^,]+)(,(.*))?"
)


def make_model_dir(path: Path, net: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Writes what a .mar unpacks to: model.pt (TorchScript) and meta.json."""
    path.mkdir(parents=True, exist_ok=True)
    torch.jit.script(net.eval()).save(str(path / "model.pt"))
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def metrics_cache(path: str = METRICS_YAML) -> MetricsCacheYamlImpl:
    """The worker's metrics cache: the config's model metrics, declared (initialize_cache)."""
    cache = MetricsCacheYamlImpl(path)
    cache.initialize_cache()
    return cache


def make_context(
    model_dir: Path, name: str, handler_cfg: dict | None = None, version: str = "1.0"
) -> Context:
    """A Context as the TorchServe worker builds it for a TorchScript .mar."""
    manifest = {"model": {"modelName": name, "modelVersion": version, "serializedFile": "model.pt"}}
    return Context(
        name,
        str(model_dir),
        manifest,
        8,
        None,
        "0.12.0",
        metrics=metrics_cache(),
        model_yaml_config={"handler": handler_cfg or {}},
    )


def call(
    handler: Any, ctx: Context, bodies: list[Any], headers: list[dict] | None = None
) -> list[tuple[int, dict]]:
    """Runs one batch through handler.handle; returns (status, parsed JSON) per request."""
    headers = headers or [JSON] * len(bodies)
    ctx.request_processor = [RequestProcessor(dict(h)) for h in headers]
    ctx.request_ids = {i: f"req-{i}" for i in range(len(bodies))}
    ctx.metrics.request_ids = ctx.request_ids
    out = handler.handle([{"body": b} for b in bodies], ctx)
    assert len(out) == len(bodies)
    return [(ctx.get_response_status(i)[0] or 200, json.loads(o)) for i, o in enumerate(out)]


@pytest.fixture
def as_bytes():
    """Encodes a JSON-able object as the raw body TorchServe forwards when it cannot parse."""
    return lambda obj: json.dumps(obj).encode()


def emitted(caplog) -> list[tuple[str, str, float, dict[str, str]]]:
    """(metric, type, value, dimensions) of every metric line the worker logged, in order."""
    out = []
    for rec in caplog.records:
        m = METRIC_LINE.search(rec.getMessage())
        if m:
            dims = dict(d.split(":", 1) for d in m[4].split(",") if d)
            out.append((m[1], m[6], float(m[3]), dims))
    return out


@pytest.fixture
def metric_lines(caplog):
    """metric_lines() -> the metric lines logged since the last call (see `emitted`)."""
    caplog.set_level(logging.INFO, logger="ts.metrics.caching_metric")

    def read():
        lines = emitted(caplog)
        caplog.clear()
        return lines

    return read
