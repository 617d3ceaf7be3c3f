"""The bundle's .mar files served by KServe's Python ModelServer: the same handlers, no TorchServe.

python -m serve.kserve_server [--store model_store] [--models a,b] [--http-port 8085]
                              [--grpc-port 8086 | --no-grpc] [--host 127.0.0.1]

Each .mar (or a folder holding an unpacked one) is loaded the way TorchServe's worker loads it
(serve/inprocess.py, shared with `make predict` and the benchmarks): the real `ts.context.Context`
and the handler's own `initialize`. Every request then
goes through the handler's `handle` (its readers by Content-Type, `parse`, `collate`, one forward,
`respond`, its own 4xx JSON error), so no handler code is written twice. Routes (KServe's):
- v1 `POST /v1/models/<m>:predict`: the handler's native body. JSON (a request object or
  `{"instances": [...]}`) is decoded by KServe first; any other Content-Type (text/plain, image/*)
  reaches the handler as raw bytes, as under TorchServe.
- v2 `POST /v2/models/<m>/infer` (REST and gRPC): named tensors mapped to the native request
  (`V2_INPUTS`) and the native answer to named tensors (`v2_outputs`).
- `/v2/health/ready`, `/v2/models/<m>/ready`, `/v1/models/<m>`.
A request the handler refuses gets its status and its JSON error (`{"code", "field", "error"}`).
There is no token check: bind it to loopback, or put it behind a gateway (KServe's own practice).
"""

import argparse
import asyncio
import base64
import json
import logging
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.errors import InvalidInput
from kserve.model_server import app
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from ts.context import RequestProcessor

from serve.inprocess import load_service, unpack

log = logging.getLogger(__name__)

# v2 input tensor -> (its datatypes, how its numpy value becomes the native JSON field).
# Interim mapping until handlers/oip_v2.py decodes v2 itself (see docs/contract.md).
V2_INPUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "x": (("FP32", "FP64"), "x"),
    "atoms": (("BYTES",), "atoms"),
    "edge_index": (("INT64", "INT32"), "edge_index"),
    "nodes": (("INT64", "INT32"), "nodes"),
    "z": (("INT64", "INT32"), "z"),
    "pos": (("FP32", "FP64"), "pos"),
    "forces": (("BOOL",), "forces"),
    "text": (("BYTES",), "text"),
    "image": (("BYTES",), "b64"),
}


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


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def v2_payload(request: InferRequest) -> dict[str, Any]:
    """A v2 request's named tensors as the handler's native JSON request (one request object)."""
    payload: dict[str, Any] = {}
    for tensor in request.inputs:
        if tensor.name not in V2_INPUTS:
            raise HandlerError(
                400,
                {"code": 400, "field": tensor.name, "error": f"{tensor.name}: unknown tensor; "
                 f"known: {', '.join(V2_INPUTS)}"},
            )  # fmt: skip
        datatypes, field = V2_INPUTS[tensor.name]
        if tensor.datatype not in datatypes:
            raise HandlerError(
                400,
                {"code": 400, "field": tensor.name, "error": f"{tensor.name}: datatype "
                 f"{tensor.datatype}, expected {' or '.join(datatypes)}"},
            )  # fmt: skip
        try:
            value = tensor.as_numpy()
        except ValueError as e:  # data that does not fill its declared shape
            raise HandlerError(
                400, {"code": 400, "field": tensor.name, "error": f"{tensor.name}: {e}"}
            ) from None
        if tensor.name == "forces":
            payload[field] = bool(value.reshape(-1)[0]) if value.size else False
        elif tensor.name in ("text", "image"):
            if value.size != 1:
                raise HandlerError(
                    400,
                    {"code": 400, "field": tensor.name,
                     "error": f"{tensor.name}: shape {list(value.shape)}, expected [1]"},
                )  # fmt: skip
            item = value.reshape(-1)[0]
            # JSON carries the image as base64 text; the binary extension as the file's bytes.
            if tensor.name == "image" and isinstance(item, (bytes, bytearray)):
                item = base64.b64encode(item).decode()
            payload[field] = _text(item)
        elif tensor.datatype == "BYTES":
            payload[field] = [_text(v) for v in value.reshape(-1)]
        else:
            payload[field] = value.tolist()
    return payload


def v2_outputs(answer: dict[str, Any]) -> list[InferOutput]:
    """The handler's native answer as named v2 tensors."""
    outputs: list[InferOutput] = []

    def add(name: str, datatype: str, array: np.ndarray) -> None:
        out = InferOutput(name, list(array.shape), datatype)
        out.set_data_from_numpy(array, binary_data=False)
        outputs.append(out)

    if "energy" in answer:  # QM9: energy FP64 [1], forces FP32 [N, 3]
        add("energy", "FP64", np.array([answer["energy"]], dtype=np.float64))
        if "forces" in answer:
            add("forces", "FP32", np.array(answer["forces"], dtype=np.float32).reshape(-1, 3))
    elif "predictions" in answer:  # node classification: one row per requested node
        rows = answer["predictions"]
        add("node", "INT64", np.array([r["node"] for r in rows], dtype=np.int64))
        add("label", "BYTES", np.array([r["label"] for r in rows], dtype=object))
        probs = [list(r["probabilities"].values()) for r in rows]
        add("probabilities", "FP32", np.array(probs, dtype=np.float32))
    elif "top_k" in answer:  # images: the top k classes, best first
        add("label", "BYTES", np.array([answer["label"]], dtype=object))
        add("labels", "BYTES", np.array([t["label"] for t in answer["top_k"]], dtype=object))
        top = [t["probability"] for t in answer["top_k"]]
        add("probabilities", "FP32", np.array(top, dtype=np.float32))
    else:  # classifiers: label BYTES [1], probabilities FP32 [C] in the model's label order
        add("label", "BYTES", np.array([answer["label"]], dtype=object))
        probs = list(answer["probabilities"].values())
        add("probabilities", "FP32", np.array(probs, dtype=np.float32))
    return outputs


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


class HandlerModel(Model):
    """One served model: the .mar's own handler class, called through its `handle`."""

    def __init__(self, name: str, model_dir: Path):
        super().__init__(name, return_response_headers=True)
        self.model_dir = model_dir
        # One Context per model, as in a TorchServe worker; requests take turns on it.
        self._lock = threading.Lock()

    def load(self) -> bool:
        """Loads the handler as TorchServe's worker does (serve/inprocess.py)."""
        self.service = load_service(self.model_dir, self.name)
        self.ready = True
        return self.ready

    def handle(self, row: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any, dict]:
        """One request (TorchServe's row: `body`, or a form's fields) through the handler's
        `handle`: (status, JSON answer, response headers)."""
        with self._lock:
            ctx = self.service.context
            ctx.request_processor = [RequestProcessor(headers)]
            ctx.request_ids = {0: headers.get("x-request-id") or str(uuid.uuid4())}
            ctx.metrics.request_ids = ctx.request_ids
            # The entry point TsModelLoader built: the handler instance's bound `handle`.
            (out,) = self.service._entry_point([row], ctx)
            status = ctx.get_response_status(0)[0] or 200
            return status, json.loads(out), dict(ctx.get_response_headers(0))

    async def predict(
        self,
        payload: dict | bytes | InferRequest,
        headers: Optional[dict[str, str]] = None,
        response_headers: Optional[dict[str, str]] = None,
    ) -> dict | InferResponse:
        """v1: the native body to the native answer; v2: tensors to the native request and back."""
        headers = dict(headers or {})
        v2 = isinstance(payload, InferRequest)
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if isinstance(payload, InferRequest):
            row: dict[str, Any] = {"body": v2_payload(payload)}
            # The handler reads the native JSON it was given, not the v2 envelope's headers.
            headers = {"content-type": "application/json"}
        elif isinstance(payload, bytes) and ctype in FORMS:
            row = await form_row(payload, headers["content-type"])
        else:
            row = {"body": payload}
        # The forward runs off the event loop, so health checks answer during it.
        status, answer, extra = await asyncio.to_thread(self.handle, row, headers)
        if response_headers is not None:
            response_headers.update(extra)
            response_headers.pop("Content-Type", None)
        if status >= 300:
            raise HandlerError(status, answer)
        if not v2:
            return answer
        assert isinstance(payload, InferRequest)
        return InferResponse(
            payload.id or str(uuid.uuid4()), self.name, v2_outputs(answer), from_grpc=False
        )


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


def load_models(store: Path, names: Optional[list[str]], workdir: Path) -> list[HandlerModel]:
    """A loaded HandlerModel per .mar of `store` (or per name of `names`)."""
    found = {p.stem if p.suffix == ".mar" else p.name: p for p in sorted(store.iterdir())}
    found = {k: v for k, v in found.items() if v.suffix == ".mar" or (v / "MAR-INF").is_dir()}
    names = names or sorted(found)
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"no .mar for {missing} in {store}: run `make archive` first")
    models = []
    for name in names:
        model = HandlerModel(name, unpack(found[name], workdir))
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
    parser.add_argument("--grpc-port", type=int, default=8086)
    parser.add_argument("--no-grpc", action="store_true")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    with tempfile.TemporaryDirectory(prefix="kserve-mar-") as workdir:
        models = load_models(args.store, names, Path(workdir))
        app.add_exception_handler(HandlerError, handler_error)
        server = BundleModelServer(
            args.host, args.http_port, None if args.no_grpc else args.grpc_port
        )
        server.start(models)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
