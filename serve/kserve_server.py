"""The bundle's .mar files served by KServe's Python ModelServer: the same handlers, no TorchServe.

python -m serve.kserve_server [--store model_store] [--models a,b] [--http-port 8085]
                              [--grpc-port 8087 | --no-grpc] [--host 127.0.0.1] [--no-batching]

Each .mar (or a folder holding an unpacked one) is loaded the way TorchServe's worker loads it
(serve/inprocess.py, shared with `make predict` and the benchmarks): the real `ts.context.Context`
and the handler's own `initialize`. Every request then
goes through the handler's `handle` (its readers by Content-Type, `parse`, `collate`, one forward,
`respond`, its own 4xx JSON error), so no handler code is written twice. Concurrent requests
for a model share one `handle` call, up to its model-config's batchSize, as under TorchServe
(serve/kserve_batching.py; `--no-batching` turns it off). Routes (KServe's):
- v1 `POST /v1/models/<m>:predict`: the handler's native body. JSON (a request object or
  `{"instances": [...]}`) is decoded by KServe first; any other Content-Type (text/plain, image/*)
  reaches the handler as raw bytes, as under TorchServe.
- v2 `POST /v2/models/<m>/infer` (REST and gRPC): the handler decodes the tensors and answers
  v2 itself (handlers/oip_v2.py, as under TorchServe): REST bodies reach it untouched
  (`v2_route`), gRPC requests as the binary tensor extension (`grpc_body`).
- `GET /v2/models/<m>` (metadata: oip_v2.metadata), `/v2/health/ready`, `/v2/models/<m>/ready`,
  `/v1/models/<m>`.
A request the handler refuses gets its status and its JSON error (`{"code", "field", "error"}`).
There is no token check: bind it to loopback, or put it behind a gateway (KServe's own practice).
"""

import argparse
import importlib
import json
import logging
import struct
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from kserve import InferRequest, InferResponse, Model, ModelServer
from kserve.errors import InvalidInput, ModelNotFound
from kserve.model_server import app
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser

from serve.inprocess import handle, load_service, unpack
from serve.kserve_batching import MicroBatcher

log = logging.getLogger(__name__)


# Bodies that TorchServe's frontend decodes into one row key per field before a worker sees them.
FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


class HandlerError(InvalidInput):
    """A request the handler refused: its status and its JSON error body, passed through as is.

    An InvalidInput, so that KServe's gRPC interceptor answers INVALID_ARGUMENT with the body.
    """

    def __init__(self, status: int, body: Any):
        super().__init__(json.dumps(body))
        self.status, self.body = status, body


async def handler_error(_: Request, exc: Exception) -> JSONResponse:
    """The handler's own status and JSON error on the REST routes (KServe's would be 400 + text)."""
    assert isinstance(exc, HandlerError)
    return JSONResponse(status_code=exc.status, content=exc.body)


def oip() -> ModuleType:
    """The handlers' oip_v2, as packed in the .mar files (on sys.path once a model is loaded)."""
    return importlib.import_module("oip_v2")


def grpc_body(request: InferRequest) -> tuple[bytes, dict[str, str]]:
    """A gRPC v2 request as the REST binary tensor extension carries it: (body, its header).

    The handler decodes v2 itself (handlers/oip_v2.py), from the body TorchServe would pass it.
    gRPC carries BYTES elements as bytes (not JSON text) and tritonclient sends every tensor in
    `raw_input_contents`: those go after the JSON header, BYTES length-prefixed as the
    extension has them; numeric `contents` stay JSON data.
    """
    inputs, raw = [], []
    for tensor in request.inputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype}
        entry["shape"] = list(tensor.shape)
        params = dict(tensor.parameters or {})
        data = tensor._raw_data  # KServe keeps raw_input_contents here, unparsed
        if data is None and tensor.datatype == "BYTES":
            data = b"".join(struct.pack("<I", len(v)) + v for v in tensor.data)
        if data is None:
            entry["data"] = tensor.data
        else:
            params["binary_data_size"] = len(data)
            raw.append(data)
        if params:
            entry["parameters"] = params
        inputs.append(entry)
    head: dict[str, Any] = {"inputs": inputs}
    if request.id:
        head["id"] = request.id
    if request.request_outputs:
        head["outputs"] = [{"name": o.name} for o in request.request_outputs]
    header = json.dumps(head).encode()
    return header + b"".join(raw), {oip().HEADER.lower(): str(len(header))}


async def form_row(body: bytes, content_type: str) -> dict[str, Any]:
    """A form body as TorchServe's frontend hands it to a worker: one key per field, as bytes.

    KServe passes a non-JSON body through as bytes; the handlers read forms the way TorchServe
    decodes them (multipart and urlencoded), so starlette's own parsers decode them here.
    """

    async def stream() -> Any:
        yield body

    headers = Headers({"content-type": content_type})
    multipart = content_type.lower().startswith("multipart/")
    parser = (MultiPartParser if multipart else FormParser)(headers, stream())
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise HandlerError(
            400, {"code": 400, "field": "body", "error": f"body: malformed form: {e.message}"}
        ) from None
    row: dict[str, Any] = {}
    for key, value in form.multi_items():
        row[key] = await value.read() if isinstance(value, UploadFile) else value.encode()
    return row


Answer = tuple[int, Any, dict]  # (status, JSON answer, response headers)


class HandlerModel(Model):
    """One served model: the .mar's own handler class, called through its `handle`, with
    concurrent requests batched as TorchServe batches them (serve/kserve_batching.py)."""

    def __init__(self, name: str, model_dir: Path, batching: bool = True):
        super().__init__(name, return_response_headers=True)
        self.model_dir, self.batching = model_dir, batching
        # One Context per model, as in a TorchServe worker; batches take turns on it.
        self._lock = threading.Lock()

    def load(self) -> bool:
        """Loads the handler as TorchServe's worker does (serve/inprocess.py), and its batcher
        with the model-config's batchSize and maxBatchDelay (ms)."""
        self.service = load_service(self.model_dir, self.name)
        config = self.service.context.model_yaml_config or {}
        size = int(config.get("batchSize") or 1) if self.batching else 1
        delay = float(config.get("maxBatchDelay") or 0) / 1000
        self.batcher: MicroBatcher[tuple[dict, dict], Answer] = MicroBatcher(
            self.handle_batch, size, delay
        )
        self.ready = True
        return self.ready

    def handle_batch(self, requests: list[tuple[dict[str, Any], dict[str, str]]]) -> list[Answer]:
        """Requests (TorchServe's row: `body`, or a form's fields; and the headers) through one
        call of the handler's `handle`, as one TorchServe batch."""
        with self._lock:
            rows = [row for row, _ in requests]
            answers = handle(self.service, rows, [headers for _, headers in requests])
        return [(status, json.loads(text), extra) for status, text, extra in answers]

    def handle(self, row: dict[str, Any], headers: dict[str, str]) -> Answer:
        """One request alone through the handler's `handle`."""
        return self.handle_batch([(row, headers)])[0]

    def handler(self) -> Any:
        """The handler instance (TsModelLoader's entry point is its bound `handle`)."""
        return self.service._entry_point.__self__

    def metadata(self) -> dict[str, Any]:
        """GET /v2/models/<m>: the v2 tensors that the handler's own oip_v2 declares."""
        handler = self.handler()
        version = handler.model_identity()[1]
        return oip().metadata(oip().kind_for(handler), handler.meta, self.name, version)

    def get_input_types(self) -> list[dict]:
        """KServe's model metadata inputs (the v2 metadata's)."""
        return self.metadata()["inputs"]

    def get_output_types(self) -> list[dict]:
        """KServe's model metadata outputs (the v2 metadata's)."""
        return self.metadata()["outputs"]

    async def answer(self, row: dict[str, Any], headers: dict[str, str]) -> Answer:
        """The request's answer from its batch, run off the event loop (health checks answer
        during a forward)."""
        return await self.batcher.submit((row, headers))

    async def predict(
        self,
        payload: dict | bytes | InferRequest,
        headers: Optional[dict[str, str]] = None,
        response_headers: Optional[dict[str, str]] = None,
    ) -> dict | InferResponse:
        """v1: the native body to the native answer; gRPC v2: the request as the binary tensor
        extension to the handler, its v2 answer back (REST v2 takes `v2_infer`'s route)."""
        headers = dict(headers or {})
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if isinstance(payload, InferRequest):
            body, headers = grpc_body(payload)
            # A Host header: the handler reads it as REST (a 4xx, not TorchServe's gRPC quirk).
            headers["host"] = "grpc"
            row: dict[str, Any] = {"body": body}
        elif isinstance(payload, bytes) and ctype in FORMS:
            row = await form_row(payload, headers["content-type"])
        else:
            row = {"body": payload}
        status, answer, extra = await self.answer(row, headers)
        if response_headers is not None:
            response_headers.update(extra)
            response_headers.pop("Content-Type", None)
        if status >= 300:
            raise HandlerError(status, answer)
        if isinstance(payload, InferRequest):
            return InferResponse.from_rest(answer)
        return answer


def v2_route(models: dict[str, HandlerModel]) -> None:
    """REST `POST /v2/models/<m>/infer` ahead of KServe's own: the body and headers reach the
    handler untouched, as TorchServe's frontend passes them, so JSON and the binary extension
    are decoded by the handler's oip_v2 alone (KServe's decoder would parse them first, refuse
    non-UTF-8 BYTES such as an image, and answer bad shapes with its own errors)."""

    async def v2_infer(model_name: str, request: Request) -> Response:
        model = models.get(model_name)
        if model is None:
            raise ModelNotFound(model_name)
        row = {"body": await request.body()}
        status, answer, extra = await model.answer(row, dict(request.headers))
        extra.pop("Content-Type", None)
        return JSONResponse(status_code=status, content=answer, headers=extra)

    app.add_api_route("/v2/models/{model_name}/infer", v2_infer, methods=["POST"])


class LoopbackGRPCServer(GRPCServer):
    """KServe's gRPC server on `host` (KServe 0.21 binds every interface, `[::]`)."""

    def __init__(self, host: str, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.host = host

    async def start(self, max_workers: int) -> None:
        """KServe's GRPCServer.start, listening on host:port only."""
        from concurrent import futures

        from grpc import aio

        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self._server.add_insecure_port(f"{self.host}:{self._port}")
        await self._server.start()
        await self._server.wait_for_termination()


class BundleModelServer(ModelServer):
    """KServe's ModelServer bound to `host` (its REST server binds 0.0.0.0 unless told)."""

    def __init__(self, host: str, http_port: int, grpc_port: Optional[int]):
        super().__init__(http_port=http_port, grpc_port=grpc_port or 0, enable_grpc=False)
        self.host, self.bundle_grpc_port = host, grpc_port

    def setup_event_loop(self) -> None:
        """Runs after `start` built the servers and before they listen: set their address."""
        super().setup_event_loop()
        if self._rest_server is not None:
            self._rest_server.config.host = self.host
        if self.bundle_grpc_port:
            self._grpc_server = LoopbackGRPCServer(
                self.host,
                self.bundle_grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs={},
            )
            self.servers.append(self._grpc_server.start(self.max_threads))


def load_models(
    store: Path, names: Optional[list[str]], workdir: Path, batching: bool = True
) -> list[HandlerModel]:
    """A loaded HandlerModel per .mar of `store` (or per name of `names`)."""
    found = {p.stem if p.suffix == ".mar" else p.name: p for p in sorted(store.iterdir())}
    found = {k: v for k, v in found.items() if v.suffix == ".mar" or (v / "MAR-INF").is_dir()}
    names = names or sorted(found)
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"no .mar for {missing} in {store}: run `make archive` first")
    models = []
    for name in names:
        model = HandlerModel(name, unpack(found[name], workdir), batching)
        model.load()
        models.append(model)
    return models


def main(argv: Optional[list[str]] = None) -> None:
    """Parses the command line, loads the models and serves them until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8085)
    # Not 8086: the container's probe port (docker/entrypoint.py); 8080-8085 are taken too.
    parser.add_argument("--grpc-port", type=int, default=8087)
    parser.add_argument("--no-grpc", action="store_true")
    parser.add_argument(
        "--no-batching", action="store_true", help="one request per handle call (batchSize 1)"
    )
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    with tempfile.TemporaryDirectory(prefix="kserve-mar-") as workdir:
        models = load_models(args.store, names, Path(workdir), not args.no_batching)
        app.add_exception_handler(HandlerError, handler_error)
        v2_route({m.name: m for m in models})
        server = BundleModelServer(
            args.host, args.http_port, None if args.no_grpc else args.grpc_port
        )
        server.start(models)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
