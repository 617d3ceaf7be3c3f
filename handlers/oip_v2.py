"""Open Inference Protocol v2 (KServe v2, Triton's HTTP API) for every handler, per request.

TorchServe 0.12 routes `POST /v2/models/{m}/infer` to the model's workers like any prediction,
with the body untouched, and its own `kservev2` envelope reads only the first request of a
batch (pytorch/serve#2158). So each request is decoded here, on its own, into the model's
native JSON payload, then goes through the handler's own `parse`: a v2 caller gets exactly the
checks, the errors and the answer of the native route, and a bad one fails alone in its batch.

A request is v2 when its JSON body is an object with `inputs`, or when it carries the binary
tensor extension's `Inference-Header-Content-Length` header (the first that many bytes are the
JSON header, the rest the tensors' raw bytes in input order, each `parameters.binary_data_size`
long). The answer is always JSON (`binary_data_output` is not honoured; the protocol lets a
server answer in JSON, and tritonclient reads either).

Nothing here imports TorchServe: `decode` and `encode` are plain functions of the body and the
model's `SPECS` entry, so they are unit-tested without a server.
"""

import ast
import base64
import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Optional

from request_error import RequestError

HEADER = "Inference-Header-Content-Length"
# Set by the bundle's TorchServe frontend (serve/frontend/) on /v2/models/{model}/infer and
# /explain only, so a body sent there is read as v2 or refused, never answered natively.
ROUTE_HEADER = "Bundle-Oip-Route"
# Datatype -> (struct format of one little-endian element, its size); BYTES is length-prefixed.
FIXED = {
    "BOOL": ("?", 1),
    "INT8": ("b", 1),
    "INT16": ("h", 2),
    "INT32": ("i", 4),
    "INT64": ("q", 8),
    "UINT8": ("B", 1),
    "UINT16": ("H", 2),
    "UINT32": ("I", 4),
    "UINT64": ("Q", 8),
    "FP32": ("f", 4),
    "FP64": ("d", 8),
}


@dataclass(frozen=True)
class Tensor:
    """One declared tensor: its v2 datatype and shape (-1 free, or a meta.json key)."""

    name: str
    datatype: str
    shape: tuple[int | str, ...]
    optional: bool = False


@dataclass(frozen=True)
class Spec:
    """A family's v2 contract: its inputs (alternatives grouped), outputs and payload builder."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    # Groups of inputs of which exactly one is sent (x or atoms); the rest are required
    # unless optional.
    one_of: tuple[tuple[str, ...], ...] = ()


@dataclass
class Call:
    """A decoded v2 request: the native payload, its id and the outputs it asked for."""

    payload: dict[str, Any]
    id: Optional[str] = None
    outputs: Optional[list[str]] = None


GRAPH_IN = (
    Tensor("x", "FP32", (-1, "feature_dim")),
    Tensor("atoms", "BYTES", (-1,)),
    Tensor("edge_index", "INT64", (2, -1)),
)
CLASSIFIER_OUT = (Tensor("label", "BYTES", (1,)), Tensor("probabilities", "FP32", (-1,)))
# Keyed by handler class name (found along the MRO), so this module needs no handler import.
SPECS: dict[str, Spec] = {
    "NodeClassifierHandler": Spec(
        inputs=(GRAPH_IN[0], GRAPH_IN[2], Tensor("nodes", "INT64", (-1,), optional=True)),
        outputs=(
            Tensor("node", "INT64", (-1,)),
            Tensor("label", "BYTES", (-1,)),
            Tensor("probabilities", "FP32", (-1, -1)),
        ),
    ),
    "GraphClassifierHandler": Spec(GRAPH_IN, CLASSIFIER_OUT, one_of=(("x", "atoms"),)),
    "MoleculeEnergyHandler": Spec(
        inputs=(
            Tensor("z", "INT64", (-1,)),
            Tensor("pos", "FP32", (-1, 3)),
            Tensor("forces", "BOOL", (1,), optional=True),
        ),
        outputs=(Tensor("energy", "FP64", (1,)), Tensor("forces", "FP32", (-1, 3), optional=True)),
    ),
    "TextClassifierHandler": Spec((Tensor("text", "BYTES", (1,)),), CLASSIFIER_OUT),
    "ImageClassifierHandler": Spec((Tensor("image", "BYTES", (1,)),), CLASSIFIER_OUT),
}
# Native payload fields whose errors name a differently called v2 tensor.
NATIVE_FIELD = {"b64": "image"}


def kind_for(handler: Any) -> str:
    """The SPECS key of a handler instance or class (its family's class name)."""
    cls = handler if isinstance(handler, type) else type(handler)
    for base in cls.__mro__:
        if base.__name__ in SPECS:
            return base.__name__
    raise KeyError(f"{cls.__name__} declares no Open Inference Protocol v2 tensors (oip_v2.SPECS)")


def kind_for_source(source: str) -> str:
    """The SPECS key of the handler class a handler module's source defines, without importing
    it (and torch with it): the first class (TorchServe loads the first) or one of its bases."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            names = [node.name] + [b.id for b in node.bases if isinstance(b, ast.Name)]
            for name in names:
                if name in SPECS:
                    return name
            raise KeyError(f"{node.name} declares no Open Inference Protocol v2 tensors")
    raise KeyError("the handler module defines no class")


def is_binary(header_value: Optional[str]) -> bool:
    """Whether the request uses the binary tensor extension."""
    return header_value is not None


def looks_like_json(body: Any) -> bool:
    """A body without Content-Type that is a JSON object (tritonclient sends none)."""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body[:64]).lstrip(b" \t\r\n\xef\xbb\xbf").startswith(b"{")
    return isinstance(body, (str, dict))


def split_binary(body: Any, header_value: str, limit: int) -> tuple[dict[str, Any], bytes]:
    """The JSON header object and the raw tensor bytes of a binary-extension request."""
    if not isinstance(body, (bytes, bytearray)):
        body = (body or "").encode() if isinstance(body, str) else b""
    if len(body) > limit:
        raise RequestError("body", f"{len(body)} bytes exceeds {limit}", 413)
    text = header_value.strip()
    if not text.isdigit() or not 0 < int(text) <= len(body):
        raise RequestError(HEADER, f"must be the JSON header's size, 1..{len(body)}; got {text!r}")
    n = int(text)
    try:
        head = json.loads(bytes(body[:n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError(HEADER, f"the first {n} bytes are not a JSON object") from None
    if not isinstance(head, dict):
        raise RequestError("body", "the JSON header must be an object with `inputs`")
    return head, bytes(body[n:])


def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in value
    ):
        raise RequestError(name, f"shape must be a list of non-negative integers, got {value!r}")
    return value


def _flatten(data: Any, rank: int, name: str) -> list[Any]:
    """Row-major elements of `data`, sent flat or nested up to the tensor's rank."""
    if not isinstance(data, list):
        return [data]
    flat = data
    for _ in range(max(rank - 1, 0)):
        if not any(isinstance(v, list) for v in flat):
            break
        out: list[Any] = []
        for v in flat:
            if not isinstance(v, list):
                raise RequestError(name, "data nests unevenly: mix of lists and values")
            out.extend(v)
        flat = out
    return flat


def _check_elements(flat: list[Any], datatype: str, name: str) -> None:
    """Each JSON element is of the tensor's datatype (the first that is not is named)."""
    if datatype == "BYTES":
        ok = lambda v: isinstance(v, str)  # noqa: E731
    elif datatype == "BOOL":
        ok = lambda v: isinstance(v, bool)  # noqa: E731
    elif datatype.startswith(("INT", "UINT")):
        ok = lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**64  # noqa: E731
    else:
        ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    for j, v in enumerate(flat):
        if not ok(v):
            raise RequestError(name, f"data[{j}] = {str(v)[:24]!r} is not {datatype}")


def _unbase64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise RequestError(name, "BYTES element is not valid base64") from None


def _from_binary(raw: bytes, datatype: str, count: int, name: str) -> list[Any]:
    if datatype == "BYTES":
        # Each element: a 4-byte little-endian length, then that many bytes.
        out: list[Any] = []
        at = 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise RequestError(name, "binary BYTES data ends inside an element's length")
            (size,) = struct.unpack_from("<I", raw, at)
            if at + 4 + size > len(raw):
                raise RequestError(name, f"binary BYTES element {len(out)} runs past its data")
            out.append(raw[at + 4 : at + 4 + size])
            at += 4 + size
        if len(out) != count:
            raise RequestError(name, f"binary data holds {len(out)} elements; shape says {count}")
        return out
    fmt, size = FIXED[datatype]
    if len(raw) != count * size:
        raise RequestError(
            name, f"{len(raw)} bytes of binary data; shape and {datatype} say {count * size}"
        )
    return list(struct.unpack(f"<{count}{fmt}", raw))


def tensors(
    body: dict[str, Any],
    spec: Spec,
    meta: dict[str, Any],
    raw: bytes = b"",
    base64_bytes: bool = False,
) -> dict[str, tuple[list[int], list[Any]]]:
    """Every declared input of a v2 request: {name: (shape, row-major elements)}, checked.

    `base64_bytes`: BYTES elements are base64 text (TorchServe's gRPC service encodes them so).
    """
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("inputs", "must be a non-empty list of tensors")
    declared = {t.name: t for t in spec.inputs}
    out: dict[str, tuple[list[int], list[Any]]] = {}
    at = 0
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise RequestError(f"inputs[{i}]", "must be an object with a string `name`")
        name = tensor["name"]
        if name not in declared:
            raise RequestError(
                name, f"unknown input tensor; this model takes {', '.join(declared)}"
            )
        if name in out:
            raise RequestError(name, "sent twice: send each input tensor once")
        want = declared[name]
        if tensor.get("datatype") != want.datatype:
            raise RequestError(
                name, f"datatype {tensor.get('datatype')!r}, expected {want.datatype}"
            )
        shape = _shape(tensor.get("shape"), name)
        dims = [meta.get(d, -1) if isinstance(d, str) else d for d in want.shape]
        if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape)):
            pretty = ", ".join("N" if d == -1 else str(d) for d in dims)
            raise RequestError(name, f"shape {shape}, expected [{pretty}]")
        count = math.prod(shape)
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(name, "parameters must be an object")
        size = params.get("binary_data_size")
        if size is not None:
            if "data" in tensor:
                raise RequestError(name, "has both `data` and binary_data_size: send one")
            if (
                not isinstance(size, int)
                or isinstance(size, bool)
                or not 0 <= size <= len(raw) - at
            ):
                raise RequestError(
                    name, f"binary_data_size {size!r} exceeds the {len(raw) - at} bytes left"
                )
            flat = _from_binary(raw[at : at + size], want.datatype, count, name)
            at += size
        elif "data" in tensor:
            flat = _flatten(tensor["data"], len(shape), name)
            _check_elements(flat, want.datatype, name)
            if base64_bytes and want.datatype == "BYTES":
                flat = [_unbase64(v, name) for v in flat]
            if len(flat) != count:
                raise RequestError(
                    name,
                    f"data has {len(flat)} elements; shape {shape} says {count}",
                )
        else:
            raise RequestError(name, "has no `data` (nor binary_data_size)")
        out[name] = (shape, flat)
    if at != len(raw):
        raise RequestError("body", f"{len(raw) - at} bytes after the binary tensors")
    for group in spec.one_of:
        sent = [n for n in group if n in out]
        if len(sent) != 1:
            raise RequestError(group[0], f"send exactly one of the tensors {' or '.join(group)}")
    grouped = {n for g in spec.one_of for n in g}
    for t in spec.inputs:
        if not t.optional and t.name not in grouped and t.name not in out:
            pretty = ", ".join("N" if d == -1 else str(d) for d in t.shape)
            raise RequestError(t.name, f"missing input tensor ({t.datatype} [{pretty}])")
    return out


def _rows(shape: list[int], flat: list[Any]) -> list[list[Any]]:
    """(R, C) nested rows of row-major elements."""
    width = shape[1]
    return [flat[r * width : (r + 1) * width] for r in range(shape[0])]


def _text(value: Any, name: str) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(name, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    return value


def native_payload(
    got: dict[str, tuple[list[int], list[Any]]], meta: dict[str, Any]
) -> dict[str, Any]:
    """The family's native JSON request for the decoded tensors."""
    payload: dict[str, Any] = {}
    if "x" in got:
        payload["x"] = _rows(*got["x"])
    if "atoms" in got:
        payload["atoms"] = [_text(a, "atoms") for a in got["atoms"][1]]
    if "edge_index" in got:
        payload["edge_index"] = _rows(*got["edge_index"])
    if "nodes" in got:
        payload["nodes"] = got["nodes"][1]
    if "z" in got:
        payload["z"] = got["z"][1]
    if "pos" in got:
        payload["pos"] = _rows(*got["pos"])
    if "forces" in got:
        payload["forces"] = bool(got["forces"][1][0])
    if "text" in got:
        payload["text"] = _text(got["text"][1][0], "text")
    if "image" in got:
        value = got["image"][1][0]
        # JSON carries the file as base64 text; binary data is the file itself, encoded again
        # so the handler's own parse (size limit, decoder, errors) reads it as it reads `b64`.
        if isinstance(value, (bytes, bytearray)):
            value = base64.b64encode(value).decode("ascii")
        # Every class's probability, in label order (the native answer gives the top k).
        payload.update({"b64": value, "topk": len(meta["labels"])})
    return payload


def decode(
    kind: str,
    body: dict[str, Any],
    meta: dict[str, Any],
    raw: bytes = b"",
    base64_bytes: bool = False,
) -> Call:
    """A v2 request body (and its binary tensor bytes) to the native payload; RequestError else."""
    spec = SPECS[kind]
    got = tensors(body, spec, meta, raw, base64_bytes)
    call = Call(native_payload(got, meta))
    if body.get("id") is not None:
        if not isinstance(body["id"], str):
            raise RequestError("id", f"must be a string, got {type(body['id']).__name__}")
        call.id = body["id"]
    if body.get("outputs") is not None:
        asked = body["outputs"]
        names = {t.name for t in spec.outputs}
        if not isinstance(asked, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked
        ):
            raise RequestError("outputs", "must be a list of objects with a string `name`")
        for o in asked:
            if o["name"] not in names:
                raise RequestError(
                    "outputs",
                    f"unknown output {o['name']!r}; known: {', '.join(sorted(names))}",
                )
        call.outputs = [o["name"] for o in asked]
        if "forces" in call.outputs and kind == "MoleculeEnergyHandler":
            call.payload["forces"] = True  # asking for the output asks for the computation
    return call


def native_field(e: RequestError) -> RequestError:
    """A native parse error renamed after the v2 tensor it is about."""
    head, sep, rest = e.field.partition("[")
    if head in NATIVE_FIELD:
        renamed = NATIVE_FIELD[head] + sep + rest
        return RequestError(renamed, str(e).split(": ", 1)[-1], e.code)
    return e


def _out(name: str, datatype: str, shape: list[int], data: list[Any], **params: Any) -> dict:
    t: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape, "data": data}
    if params:
        t["parameters"] = params
    return t


def outputs(kind: str, result: dict[str, Any], labels: list[str]) -> list[dict[str, Any]]:
    """The native answer of one request as v2 output tensors."""
    if kind == "NodeClassifierHandler":
        preds = result["predictions"]
        return [
            _out("node", "INT64", [len(preds)], [p["node"] for p in preds]),
            _out("label", "BYTES", [len(preds)], [p["label"] for p in preds]),
            _out(
                "probabilities",
                "FP32",
                [len(preds), len(labels)],
                [p["probabilities"][c] for p in preds for c in labels],
                labels=",".join(labels),
            ),
        ]
    if kind == "MoleculeEnergyHandler":
        out = [_out("energy", "FP64", [1], [result["energy"]], unit=result["unit"])]
        if "forces" in result:
            forces = result["forces"]
            flat = [c for row in forces for c in row]
            out.append(_out("forces", "FP32", [len(forces), 3], flat, unit=result["forces_unit"]))
        return out
    if "top_k" in result:  # images: every class came back as the top k
        probs = {t["label"]: t["probability"] for t in result["top_k"]}
    else:
        probs = result["probabilities"]
    return [
        _out("label", "BYTES", [1], [result["label"]]),
        _out(
            "probabilities",
            "FP32",
            [len(labels)],
            [probs[c] for c in labels],
            labels=",".join(labels),
        ),
    ]


def encode(
    kind: str, result: dict[str, Any], call: Call, labels: list[str], model: str, version: str
) -> dict[str, Any]:
    """The v2 response object for one request's native answer."""
    outs = outputs(kind, result, labels)
    if call.outputs is not None:
        outs = [o for o in outs if o["name"] in call.outputs]
    response: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outs}
    # TorchServe's gRPC OIP service reads `id` as a string: always present.
    response["id"] = call.id if call.id is not None else ""
    return response


def grpc_error(error: dict[str, Any], model: tuple[str, str]) -> dict[str, Any]:
    """An error as TorchServe's gRPC OIP service can carry it: a v2 response whose one output,
    `error` BYTES [1], is the JSON error (that service drops the HTTP status)."""
    return {
        "id": "",
        "model_name": model[0],
        "model_version": model[1],
        "outputs": [_out("error", "BYTES", [1], [json.dumps(error)])],
    }


def metadata(kind: str, meta: dict[str, Any], model: str, version: str) -> dict[str, Any]:
    """The v2 model metadata object (GET /v2/models/{m}) from the family's declarations."""
    spec = SPECS[kind]

    def describe(t: Tensor) -> dict[str, Any]:
        shape = [meta.get(d, -1) if isinstance(d, str) else d for d in t.shape]
        if t.name == "probabilities" and "labels" in meta:
            shape[-1] = len(meta["labels"])
        return {"name": t.name, "datatype": t.datatype, "shape": shape}

    return {
        "name": model,
        "versions": [version] if version else [],
        "platform": "pytorch_torchscript",
        "inputs": [describe(t) for t in spec.inputs],
        "outputs": [describe(t) for t in spec.outputs],
    }
