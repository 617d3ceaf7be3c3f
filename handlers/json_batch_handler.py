"""Shared base for handlers that take JSON: per-request validation, errors and status codes.

TorchServe hands a handler a list of requests. Each one is parsed on its own; a bad one gets
its own 4xx through `context.set_response_status(code, phrase, idx)` and a JSON error, while the
good ones go through one batched forward pass. Nothing a client sends can raise out of the
handler: whatever a request's parse raises becomes that request's own error, and a forward pass
that fails is retried request by request, so one bad request never fails the others of its batch.

Bodies are parsed here, strictly, never by TorchServe's worker (see `initialize`).
"""

import json
import logging
import os
import re
import sys
from typing import Any

import oip_v2
import orjson
import torch
from model_metrics import ModelMetrics, Observed
from request_error import RequestError
from ts.torch_handler.base_handler import BaseHandler

import payload_log

__all__ = ["Instances", "JsonBatchHandler", "RequestError", "to_device"]

log = logging.getLogger(__name__)

PHRASES = {400: "Bad Request", 413: "Payload Too Large", 500: "Internal Server Error"}
# Responses are serialised by orjson: compact UTF-8 bytes, which the worker sends as they are
# (json.dumps built a str the worker then encoded). Non-string keys become strings, as with
# json.dumps, and a non-finite float becomes null, where json.dumps wrote a bare NaN that is
# not JSON.
DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> bytes:
    """One response body: `obj` as compact JSON bytes."""
    return orjson.dumps(obj, option=DUMPS_OPTIONS)


# Python converts no integer string of more digits (sys.get_int_max_str_digits()).
MAX_INT_DIGITS = 4300


# A forward that failed on one request's input: that request's 500, the batch's others served.
FORWARD_FAILED = RequestError(
    "model", "the forward pass failed on this input (see the worker log)", 500
)
# The same when it ran out of the worker's memory: the input is too large to serve, not a fault.
OUT_OF_MEMORY = RequestError(
    "body", "needs more memory than this model's worker may use (memory_limit_mib)", 413
)


def out_of_memory(e: BaseException) -> bool:
    """MemoryError, or torch's allocator failing ("DefaultCPUAllocator: can't allocate")."""
    return isinstance(e, MemoryError) or (
        isinstance(e, RuntimeError) and "allocate" in str(e).lower()
    )


def _integer(text: str) -> int:
    # json's default, int(), raises a bare ValueError past the limit; this names the cause.
    # Shorter integers, however large, are the fields' to refuse (each names itself).
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise RequestError(
            "body", f"an integer of {len(text.lstrip('-'))} digits is longer than any field takes"
        )
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RequestError(key, f"duplicate key {key!r}: send each key once")
            seen.add(key)
    return obj


def loads(text: str) -> Any:
    """The standard parser with its hooks: every way it can fail is a RequestError.

    It keeps the last of duplicate keys (a parser differential an attacker can use: refused)
    and raises bare ValueError/RecursionError on integers of over 4,300 digits and on deep
    nesting (named here). NaN, Infinity and 1e999 parse to floats, and every numeric field
    refuses non-finite values with its own name; integers beyond 64 bits likewise.
    """
    # The interpreter's own limit on integer strings (4,300 digits unless PYTHONINTMAXSTRDIGITS
    # says otherwise) refuses a longer integer inside the C scanner; `_integer`, a Python call for
    # every integer (most of the parse time of Cora's example), is needed only where the limit
    # was lifted or raised.
    hook = None if 0 < sys.get_int_max_str_digits() <= MAX_INT_DIGITS else _integer
    try:
        return json.loads(text, parse_int=hook, object_pairs_hook=_unique_keys)
    except RequestError:
        raise
    except json.JSONDecodeError as e:
        raise RequestError(
            "body", f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise RequestError("body", "JSON nested too deeply (more than about 900 levels)") from None
    except ValueError as e:
        digits = re.search(r"value has (\d+) digits", str(e))
        if digits is None:
            raise
        raise RequestError(
            "body", f"an integer of {digits[1]} digits is longer than any field takes"
        ) from None


def to_device(obj: Any, device: torch.device | str) -> Any:
    """Tensors moved to `device`, recursively through tuples and lists; anything else as is."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(x, device) for x in obj)
    return obj


class Instances(list):
    """The items of one Vertex AI style request, `{"instances": [...]}`, answered as one
    `{"predictions": [...]}`. `parse_request` returns it instead of a single item."""


class V2Request(Instances):
    """The one item of an Open Inference Protocol v2 request, answered as v2 outputs."""

    def __init__(self, item: Any, call: oip_v2.Call) -> None:
        super().__init__([item])
        self.call = call


class JsonBatchHandler(BaseHandler):
    """Parses each request of a batch to a model input, runs one forward, answers each in order.

    Subclasses implement three hooks and may override `defaults` (the model-config `handler:`
    section overrides those):
    - `parse(payload) -> item`: one request's JSON to a model-ready item; raise RequestError.
    - `collate(items) -> tuple of tensors`: the scripted model's positional inputs for all
      items at once. `make bench` times `self.model(*collate(items))` as the in-process figure.
    - `respond(outputs, items) -> list`: one JSON-able result per item, in order.

    and declare `bodies`, the media types they accept, each with the name of the method that
    reads such a body into an item (or Instances): the base routes every request by its
    Content-Type and answers any other type with one 400. Optional hooks: `amend` (options
    from headers or form fields), `needs_grad` (autograd in the forward, e.g. forces),
    `headers` (extra response headers), `observe` (what the model metrics record of a batch,
    model_metrics.py), and `jit_optimize` (TorchScript's profiling executor).
    """

    # Media type -> reader method; "" is a request without a Content-Type, "image/*" any image.
    # Listed in the order the 400 names them.
    bodies: dict[str, str] = {"application/json": "read_json", "": "read_json"}
    # False runs the TorchScript graph as is: with a new input shape on every batch (tokens,
    # atoms), the profiling executor re-specialises for each and gains nothing on CPU.
    jit_optimize: bool = True

    # torch_threads: the worker's torch intra-op threads (None keeps torch's default, one per
    # core). Small models set 1 in model-config.yaml: a forward of a millisecond gains nothing
    # from a second thread, and its spinning threads took a core away from the frontend.
    defaults: dict[str, Any] = {
        "max_body_bytes": 8 * 1024 * 1024,
        "max_instances": 64,
        "torch_threads": None,
        # True: each request's forward runs alone, for models whose answer to one input would
        # otherwise depend on the rest of the batch (dynamic int8 quantisation scales each
        # activation tensor by the range over the whole batch, padding included).
        "forward_alone": False,
        # MiB of address space the worker may grow by after loading (RLIMIT_AS, set in
        # initialize, so every restarted worker has it too); None: no limit. A request past it
        # fails alone with 413 instead of the kernel's OOM killer taking the worker or the host.
        "memory_limit_mib": None,
        # Model metrics through TorchServe's custom metrics API (model_metrics.py); false, or
        # BUNDLE_MODEL_METRICS=0 in the server's environment, turns them off.
        "metrics": True,
    }

    def initialize(self, context: Any) -> None:
        """Loads the TorchScript model, then meta.json and the model-config `handler:` section."""
        # TorchServe's worker reads this variable for every request: unset, it json.loads each
        # application/json body itself (permissively, logging a traceback for each bad one) and
        # decodes text/* bodies. Set here, in the worker, it holds however the server was started;
        # every body then reaches the handler as bytes and is parsed once, strictly (`loads`).
        os.environ["TS_DECODE_INPUT_REQUEST"] = "false"
        yaml_cfg = getattr(context, "model_yaml_config", None) or {}
        self.config = {**self.defaults, **(yaml_cfg.get("handler") or {})}
        self.model_metrics = ModelMetrics(context, self.config["metrics"])
        self.grpc_v2: set[int] = set()  # this batch's requests from TorchServe's gRPC OIP service
        if self.config.get("torch_threads"):
            torch.set_num_threads(int(self.config["torch_threads"]))
        super().initialize(context)
        model_dir = context.system_properties.get("model_dir")
        with open(os.path.join(model_dir, "meta.json")) as f:
            self.meta = json.load(f)
        if self.config.get("memory_limit_mib"):
            self.limit_memory(float(self.config["memory_limit_mib"]))
        self.payload_log = payload_log.PayloadLog.open(self.config, context)
        self.initialized = True

    @staticmethod
    def limit_memory(mib: float) -> int:
        """Caps this process's address space at its size now plus `mib`; returns the cap.

        TorchServe has no per-worker memory limit. An address-space cap, rather than one on
        resident memory, is what Linux enforces at allocation time: the allocation fails and
        raises, the request gets its 413, and the worker lives on.
        """
        import resource

        import psutil  # a dependency of torchserve

        cap = int(psutil.Process().memory_info().vms + mib * 2**20)
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard < 0 else min(cap, hard), hard))
        log.info("address space capped at %.0f MiB (%s MiB above its size)", cap / 2**20, mib)
        return cap

    def warm_up_on(self, payloads: list[dict[str, Any]], rounds: int = 2) -> None:
        """Runs `payloads` through parse and predict before the worker reports READY.

        TorchScript's profiling executor optimises a graph on its first calls; run here, they
        do not land on the first clients (a worker is READY only once initialize returns).
        """
        for _ in range(rounds):
            self.predict([self.parse(p) for p in payloads])

    def header(self, idx: int, name: str) -> str | None:
        """A request header by case-insensitive name."""
        processors = getattr(self.context, "request_processor", None) or []
        if idx < len(processors) and processors[idx] is not None:
            for key, value in (processors[idx].get_request_properties() or {}).items():
                if key.lower() == name.lower():
                    return value.decode() if isinstance(value, bytes) else str(value)
        return None

    def v2_route(self, idx: int) -> bool:
        """Whether the request came to the frontend's /v2/models/{model}/infer route."""
        return self.header(idx, oip_v2.ROUTE_HEADER) is not None

    def content_type(self, idx: int) -> str:
        """The request's media type without parameters, lower-case ('' when absent)."""
        return (self.header(idx, "Content-Type") or "").split(";")[0].strip().lower()

    @staticmethod
    def body(row: dict) -> Any:
        """The request body as TorchServe passes it: bytes, str, or already-parsed JSON."""
        return row.get("data") if row.get("data") is not None else row.get("body")

    def read_text(self, row: dict, field: str = "body") -> Any:
        """The body with raw bytes decoded: at most max_body_bytes (else 413), UTF-8 (else 400).

        Anything else (a str, or JSON that TorchServe already parsed) comes back as is.
        """
        body = self.body(row)
        if not isinstance(body, (bytes, bytearray)):
            return body
        limit = self.config["max_body_bytes"]
        if len(body) > limit:
            raise RequestError(field, f"{len(body)} bytes exceeds {limit}", 413)
        try:
            # utf-8-sig: a leading byte-order mark (which RFC 8259 lets a parser ignore) is dropped.
            return bytes(body).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise RequestError(field, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None

    def read_payload(self, row: dict) -> dict[str, Any]:
        """Returns the request's JSON object or raises RequestError (size, syntax, type)."""
        body = self.read_text(row)
        if isinstance(body, str):
            if not body.strip():
                raise RequestError("body", "empty request body")
            body = loads(body)
        if body is None:
            raise RequestError("body", "empty request body")
        if not isinstance(body, dict):
            raise RequestError("body", f"expected a JSON object, got {type(body).__name__}")
        return body

    def parse_request(self, row: dict, idx: int) -> Any:
        """One request to a model-ready item (or Instances), read as its Content-Type says."""
        ctype = self.content_type(idx)
        reader = self.bodies.get(ctype) or self.bodies.get(ctype.split("/")[0] + "/*")
        if oip_v2.is_binary(self.header(idx, oip_v2.HEADER)):
            reader = "read_v2_binary"
        elif ctype == "" and oip_v2.looks_like_json(self.body(row)):
            reader = "read_json"  # tritonclient sends v2 JSON without a Content-Type
        elif self.v2_route(idx) and reader != "read_json":
            raise RequestError(
                "Content-Type",
                "the v2 infer route takes a V2InferRequest as application/json, or the binary "
                f"extension with {oip_v2.HEADER}; got {ctype or 'none'}",
            )
        if reader is None:
            *others, last = [t for t in self.bodies if t]
            names = f"{', '.join(others)} or {last}" if others else last
            raise RequestError("Content-Type", f"expected {names}, got {ctype}")
        item = getattr(self, reader)(row, idx)
        self.amend(item if isinstance(item, Instances) else [item], row, idx)
        return item

    def read_json(self, row: dict, idx: int) -> Any:
        """Reader of application/json bodies: `parse` for the object or each of its instances,
        or a v2 request (`inputs`)."""
        payload = self.read_payload(row)
        if "inputs" not in payload and self.v2_route(idx):
            raise RequestError("inputs", "a v2 infer request needs `inputs`")
        if "inputs" in payload:
            # TorchServe's gRPC OIP service sends a job without HTTP headers, and its BYTES in
            # base64; a REST request always has a Host header.
            grpc = self.header(idx, "Host") is None
            if grpc:
                self.grpc_v2.add(idx)
            return self.parse_v2(payload, base64_bytes=grpc)
        return self.parse_json(payload)

    def read_v2_binary(self, row: dict, idx: int) -> V2Request:
        """Reader of v2 binary-extension bodies: JSON header, then the tensors' raw bytes."""
        head, raw = oip_v2.split_binary(
            self.body(row), self.header(idx, oip_v2.HEADER) or "", self.config["max_body_bytes"]
        )
        return self.parse_v2(head, raw)

    def parse_v2(
        self, body: dict[str, Any], raw: bytes = b"", base64_bytes: bool = False
    ) -> V2Request:
        """A v2 request (oip_v2) decoded to the native payload, then `parse` as any other."""
        call = oip_v2.decode(oip_v2.kind_for(self), body, self.meta, raw, base64_bytes)
        try:
            return V2Request(self.parse(call.payload), call)
        except RequestError as e:
            raise oip_v2.native_field(e) from None

    def amend(self, items: list[Any], row: dict, idx: int) -> None:
        """Applies request-level options (a header, a form field) to the request's items."""

    def parse_json(self, payload: dict[str, Any]) -> Any:
        """`parse` for one object, or for each of `{"instances": [...]}` (Vertex AI envelope)."""
        if "instances" not in payload:
            return self.parse(payload)
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError("instances", "must be a non-empty list of request objects")
        limit = self.config.get("max_instances", 64)
        if len(instances) > limit:
            raise RequestError("instances", f"{len(instances)} exceeds the limit of {limit}", 413)
        items = Instances()
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise RequestError(f"instances[{i}]", "must be a JSON object")
            try:
                items.append(self.parse(instance))
            except RequestError as e:
                raise RequestError(f"instances[{i}].{e.field}", e.problem, e.code) from None
        return items

    def parse(self, payload: dict[str, Any]) -> Any:
        """Validates one request's JSON and returns the model-ready item for it."""
        raise NotImplementedError

    def collate(self, items: list[Any]) -> tuple[Any, ...]:
        """The scripted model's positional inputs for all items: one forward for the batch."""
        raise NotImplementedError

    def respond(self, outputs: Any, items: list[Any]) -> list[Any]:
        """Splits the model output back into one JSON-able result per item."""
        raise NotImplementedError

    def needs_grad(self, items: list[Any]) -> bool:
        """Whether the forward over these items must record autograd (forces = -dE/dpos)."""
        return False

    def headers(self) -> dict[str, str]:
        """Extra response headers, the same for every request of the batch."""
        return {}

    def observe(self, items: list[Any], outputs: list[Any]) -> Observed:
        """What the model metrics record of a batch's items and their answers, in order."""
        return Observed()

    def predict(self, items: list[Any]) -> list[Any]:
        """`forward` in inference mode, or with autograd on when `needs_grad` asks for it.

        Inference mode records nothing even inside enable_grad(), so a forward that takes a
        gradient runs outside it.
        """
        with torch.jit.optimized_execution(self.jit_optimize):
            if self.needs_grad(items):
                with torch.enable_grad():
                    return self.forward(items)
            with torch.inference_mode():
                return self.forward(items)

    def forward(self, items: list[Any]) -> list[Any]:
        """collate -> one model call -> respond.

        On an accelerator (BaseHandler sets `self.device` to cuda:<gpu_id> when the worker has
        a GPU, and loads the TorchScript file there), the collated inputs go to the device and
        the outputs come back to the CPU, so `collate` and `respond` never see a device. On CPU
        nothing is copied.
        """
        inputs = self.collate(items)
        device = getattr(self, "device", None)
        if device is None or torch.device(device).type == "cpu":
            return self.respond(self.model(*inputs), items)
        outputs = self.model(*to_device(inputs, device))
        return self.respond(to_device(outputs, "cpu"), items)

    def preprocess(self, data: list[dict]) -> dict[str, Any]:
        """Parses every request; keeps the good ones and the error of each bad one."""
        good: list[tuple[int, Any]] = []
        errors: dict[int, RequestError] = {}
        self.grpc_v2 = set()
        for idx, row in enumerate(data):
            try:
                good.append((idx, self.parse_request(row, idx)))
            except RequestError as e:
                errors[idx] = e
            except Exception as e:  # noqa: BLE001 - no request's parse may fail its batch
                if out_of_memory(e):
                    errors[idx] = OUT_OF_MEMORY
                    continue
                # A cause nobody named yet: this request's own 400, and a traceback in the
                # worker log so that it gets a precise message.
                log.exception("request %d of %d: unexpected error while parsing", idx, len(data))
                errors[idx] = RequestError("body", f"could not be read: {type(e).__name__}")
        return {"size": len(data), "good": good, "errors": errors}

    @staticmethod
    def flat(good: list[tuple[int, Any]]) -> list[Any]:
        """The model items of the good requests, instances flattened, in order."""
        items: list[Any] = []
        for _, item in good:
            items.extend(item if isinstance(item, Instances) else [item])
        return items

    def inference(self, batch: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Runs one forward pass over every item of the good requests (instances flattened).

        When it fails, each request runs alone: the ones that fail again get their own 500
        and the others their answers, so a forward that one input breaks fails only that one.
        With `forward_alone` each request always runs alone.
        """
        items = self.flat(batch["good"])
        if not items:
            batch["outputs"] = []
            return batch
        if self.config["forward_alone"]:
            batch["good"], batch["outputs"] = self._one_by_one(batch, batch["good"])
            return batch
        try:
            batch["outputs"] = self.predict(items)
        except Exception as e:  # noqa: BLE001 - isolate the request that broke the forward
            if len(batch["good"]) == 1 and not isinstance(batch["good"][0][1], Instances):
                log.exception("the forward pass failed for request %d", batch["good"][0][0])
                self._failed(batch, batch["good"], e)
                return batch
            log.exception("the forward pass of %d requests failed: retrying one by one", len(items))
            batch["good"], batch["outputs"] = self._one_by_one(batch, batch["good"])
        return batch

    def _one_by_one(
        self, batch: dict[str, Any], good: list[tuple[int, Any]]
    ) -> tuple[list[tuple[int, Any]], list[Any]]:
        """Each request's forward alone; a request that fails gets its own 500."""
        outputs: list[Any] = []
        kept: list[tuple[int, Any]] = []
        for idx, item in good:
            try:
                outputs.extend(self.predict(self.flat([(idx, item)])))
                kept.append((idx, item))
            except Exception as e:  # noqa: BLE001
                log.exception("the forward pass failed for request %d", idx)
                batch["errors"][idx] = OUT_OF_MEMORY if out_of_memory(e) else FORWARD_FAILED
        return kept, outputs

    @staticmethod
    def _failed(batch: dict[str, Any], failed: list[tuple[int, Any]], e: Exception) -> None:
        for idx, _ in failed:
            batch["errors"][idx] = OUT_OF_MEMORY if out_of_memory(e) else FORWARD_FAILED
        gone = {idx for idx, _ in failed}
        batch["good"] = [g for g in batch["good"] if g[0] not in gone]
        batch["outputs"] = []

    def model_identity(self) -> tuple[str, str]:
        """(model name, version) from the MAR manifest."""
        model = (getattr(self.context, "manifest", None) or {}).get("model") or {}
        return str(model.get("modelName", "")), str(model.get("modelVersion", ""))

    def v2_response(self, result: Any, call: oip_v2.Call) -> dict[str, Any]:
        """One request's native answer as a v2 response object."""
        labels = list(self.meta.get("labels") or [])
        return oip_v2.encode(oip_v2.kind_for(self), result, call, labels, *self.model_identity())

    def postprocess(self, batch: dict[str, Any]) -> list[bytes]:
        """Returns one JSON body per request, in order, and sets each request's status."""
        self.model_metrics.record(self, batch)
        payload_log.observe(self, self.flat(batch["good"]), batch["outputs"])  # drift monitor
        responses: list[bytes] = [b""] * batch["size"]
        outputs = iter(batch["outputs"])
        for idx, item in batch["good"]:
            if isinstance(item, V2Request):
                out: Any = self.v2_response(next(outputs), item.call)
            elif isinstance(item, Instances):
                out = {"predictions": [next(outputs) for _ in item]}
            else:
                out = next(outputs)
            responses[idx] = dumps(out)
        for idx, err in batch["errors"].items():
            self.context.set_response_status(err.code, PHRASES.get(err.code, "Error"), idx)
            body = err.body()
            if idx in self.grpc_v2:
                # TorchServe's gRPC OIP service ignores the status and reads any answer as a v2
                # response: one without `id` makes its frontend thread raise and restart the
                # worker. The error goes out as a v2 response with an `error` output instead.
                body = oip_v2.grpc_error(body, self.model_identity())
            responses[idx] = dumps(body)
        for idx in range(batch["size"]):
            self.context.set_response_content_type(idx, "application/json")
            # How many requests shared this forward pass: makes dynamic batching observable.
            self.context.set_response_header(idx, "X-Batch-Size", str(batch["size"]))
            for name, value in self.headers().items():
                self.context.set_response_header(idx, name, value)
        return responses
