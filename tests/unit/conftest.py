"""In-process handler harness: the real ts.context.Context and a real TorchScript model dir."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import ts
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

METRICS_YAML = str(Path(ts.__file__).parent / "configs" / "metrics.yaml")
JSON = {"Content-Type": "application/json"}


def make_model_dir(path: Path, net: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Writes what a .mar unpacks to: model.pt (TorchScript) and meta.json."""
    path.mkdir(parents=True, exist_ok=True)
    torch.jit.script(net.eval()).save(str(path / "model.pt"))
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def make_context(model_dir: Path, name: str, handler_cfg: dict | None = None) -> Context:
    """A Context as the TorchServe worker builds it for a TorchScript .mar."""
    manifest = {"model": {"modelName": name, "serializedFile": "model.pt"}}
    return Context(
        name,
        str(model_dir),
        manifest,
        8,
        None,
        "0.12.0",
        metrics=MetricsCacheYamlImpl(METRICS_YAML),
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
