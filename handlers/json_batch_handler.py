"""Shared base for handlers that take JSON: per-request validation, errors and status codes.

TorchServe hands a handler a list of requests. Each one is parsed on its own; a bad one gets
its own 4xx through `context.set_response_status(code, phrase, idx)` and a JSON error, while the
good ones go through one batched forward pass. Nothing a client sends can raise out of the
handler, so a bad request never becomes a 500 or kills the worker.
"""

import json
import logging
import os
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler

log = logging.getLogger(__name__)

PHRASES = {400: "Bad Request", 413: "Payload Too Large"}


class RequestError(Exception):
    """A client error tied to one request: the field at fault, the problem and the HTTP code."""

    def __init__(self, field: str, problem: str, code: int = 400) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem, self.code = field, problem, code

    def body(self) -> dict[str, Any]:
        """The JSON error body: `{"code": 400, "field": "x", "error": "x: ..."}`."""
        return {"code": self.code, "field": self.field, "error": str(self)}


class JsonBatchHandler(BaseHandler):
    """Parses each request of a batch to a model input, runs one forward, answers each in order.

    Subclasses implement `parse(payload) -> item` (raise RequestError on bad input),
    `forward(items) -> outputs` (one output per item) and may override `defaults`.
    """

    defaults: dict[str, Any] = {"max_body_bytes": 8 * 1024 * 1024}

    def initialize(self, context: Any) -> None:
        """Loads the TorchScript model, then meta.json and the model-config `handler:` section."""
        super().initialize(context)
        model_dir = context.system_properties.get("model_dir")
        with open(os.path.join(model_dir, "meta.json")) as f:
            self.meta = json.load(f)
        yaml_cfg = getattr(context, "model_yaml_config", None) or {}
        self.config = {**self.defaults, **(yaml_cfg.get("handler") or {})}
        self.initialized = True

    def read_payload(self, row: dict, idx: int) -> dict[str, Any]:
        """Returns the request's JSON object or raises RequestError (Content-Type, size, syntax)."""
        headers = {k.lower(): v for k, v in self._headers(idx).items()}
        ctype = str(headers.get("content-type", "")).split(";")[0].strip().lower()
        if ctype and ctype != "application/json":
            raise RequestError("Content-Type", f"expected application/json, got {ctype}")
        body = row.get("data") if row.get("data") is not None else row.get("body")
        if isinstance(body, (bytes, bytearray)):
            if len(body) > self.config["max_body_bytes"]:
                raise RequestError(
                    "body", f"{len(body)} bytes exceeds {self.config['max_body_bytes']}", 413
                )
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RequestError(
                    "body", f"not valid UTF-8 ({e.reason} at byte {e.start})"
                ) from None
        if isinstance(body, str):
            if not body.strip():
                raise RequestError("body", "empty request body")
            try:
                body = json.loads(body)
            except json.JSONDecodeError as e:
                raise RequestError(
                    "body", f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}"
                ) from None
        if body is None:
            raise RequestError("body", "empty request body")
        if not isinstance(body, dict):
            raise RequestError("body", f"expected a JSON object, got {type(body).__name__}")
        return body

    def _headers(self, idx: int) -> dict[str, str]:
        processors = getattr(self.context, "request_processor", None) or []
        if idx < len(processors) and processors[idx] is not None:
            return dict(processors[idx].get_request_properties() or {})
        return {}

    def parse(self, payload: dict[str, Any]) -> Any:
        """Validates one request's JSON and returns the model input for it."""
        raise NotImplementedError

    def forward(self, items: list[Any]) -> list[Any]:
        """Runs the model once over all parsed items; returns one JSON-able result per item."""
        raise NotImplementedError

    def preprocess(self, data: list[dict]) -> dict[str, Any]:
        """Parses every request; keeps the good ones and the error of each bad one."""
        good: list[tuple[int, Any]] = []
        errors: dict[int, RequestError] = {}
        for idx, row in enumerate(data):
            try:
                good.append((idx, self.parse(self.read_payload(row, idx))))
            except RequestError as e:
                errors[idx] = e
        return {"size": len(data), "good": good, "errors": errors}

    def inference(self, batch: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Runs one forward pass over the good requests of the batch."""
        items = [item for _, item in batch["good"]]
        with torch.inference_mode():
            batch["outputs"] = self.forward(items) if items else []
        return batch

    def postprocess(self, batch: dict[str, Any]) -> list[str]:
        """Returns one JSON string per request, in order, and sets each request's status."""
        responses: list[str] = [""] * batch["size"]
        for (idx, _), out in zip(batch["good"], batch["outputs"]):
            responses[idx] = json.dumps(out)
        for idx, err in batch["errors"].items():
            self.context.set_response_status(err.code, PHRASES.get(err.code, "Error"), idx)
            responses[idx] = json.dumps(err.body())
        for idx in range(batch["size"]):
            self.context.set_response_content_type(idx, "application/json")
            # How many requests shared this forward pass: makes dynamic batching observable.
            self.context.set_response_header(idx, "X-Batch-Size", str(batch["size"]))
        return responses
