"""A .mar's handler in this process, loaded the way TorchServe's worker loads it.

`ts.model_loader.TsModelLoader` reads MAR-INF/MANIFEST.json and the model-config.yaml it names,
builds the real `ts.context.Context` and calls the handler's own `initialize`; `handle` then
runs a batch through the handler's `handle` (readers by Content-Type, `parse`, `collate`, one
forward, `respond`, its 4xx JSON errors). `make predict` (serve/predict.py), KServe's
ModelServer (serve/kserve_server.py) and the in-process benchmarks load models through here,
so no handler code and no loading code is written twice. Needs only the serving stack.
"""

import json
import resource
import sys
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import ts
from ts.context import RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.model_loader import TsModelLoader

METRICS_YAML = str(Path(ts.__file__).parent / "configs" / "metrics.yaml")


def unpack(mar: Path, into: Path) -> Path:
    """A .mar's contents in `into`/<name>/ (a .mar is a zip); a folder is used as it is."""
    if mar.is_dir():
        return mar
    target = into / mar.stem
    with zipfile.ZipFile(mar) as z:
        z.extractall(target)
    return target


def load_service(
    model_dir: Path,
    name: Optional[str] = None,
    gpu_id: Optional[int] = None,
    batch_size: int = 1,
) -> Any:
    """Loads an unpacked .mar as a TorchServe worker does; returns the ts Service.

    gpu_id is what TorchServe gives a CUDA worker; None is CPU.
    """
    manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
    metrics = MetricsCacheYamlImpl(METRICS_YAML)
    metrics.initialize_cache()  # as the worker does before it loads a model
    # The worker process runs with the model dir on sys.path (handler modules import flat).
    sys.path.insert(0, str(model_dir))
    # A handler with `memory_limit_mib` caps its process's address space (RLIMIT_AS). That is
    # meant for a worker, not for this process, which loads more models after this one and
    # starts servers: a JVM under the cap dies at start ("Could not allocate compressed class
    # space") and `make bench`/`make profile` failed so. The soft limit goes back as it was.
    limit = resource.getrlimit(resource.RLIMIT_AS)
    try:
        return TsModelLoader().load(
            name or manifest["model"]["modelName"],
            str(model_dir),
            manifest["model"]["handler"],
            gpu_id,
            batch_size,
            metrics_cache=metrics,
        )
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limit)


def handle(
    service: Any, rows: Sequence[dict[str, Any]], headers: Sequence[Mapping[str, str]]
) -> list[tuple[int, str, dict[str, str]]]:
    """One batch (TorchServe's rows: `body`, or a form's fields, with each request's headers)
    through the handler's `handle`: (status, the handler's JSON text, response headers) each."""
    ctx = service.context
    ctx.request_processor = [RequestProcessor(dict(h)) for h in headers]
    ctx.request_ids = {i: h.get("x-request-id") or str(uuid.uuid4()) for i, h in enumerate(headers)}
    ctx.metrics.request_ids = ctx.request_ids
    # The entry point TsModelLoader built: the handler instance's bound `handle`.
    out = service._entry_point(list(rows), ctx)
    return [
        (ctx.get_response_status(i)[0] or 200, as_text(body), dict(ctx.get_response_headers(i)))
        for i, body in enumerate(out)
    ]


def as_text(body: str | bytes | bytearray) -> str:
    """A handler's answer (JSON bytes, as the worker sends them, or text) as the client reads it."""
    return body if isinstance(body, str) else bytes(body).decode("utf-8")
