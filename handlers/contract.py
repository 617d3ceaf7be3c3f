"""The native JSON contract of every served model, defined once as msgspec Structs.

Handlers validate each request object with `validate(payload, <Request>)`: msgspec checks the
types, the required fields and the fixed lengths in compiled code (no per-value Python loop),
and its error becomes the request's RequestError, naming the top-level field and the path of
the bad value. What a type cannot say (ids in range of the node count, finite values, atoms
too close, sizes against the model-config limits, which are 413s) the request helpers check
on tensors afterwards. `python -m serve.contract` writes the JSON Schemas (docs/schemas/) and
the OpenAPI document (docs/openapi.json) from these same classes.

No `ts` import and no torch: the generator (serve/contract.py) and the tests import it alone.
"""

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, Literal, Optional, TypeVar, Union

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from request_error import RequestError

T = TypeVar("T")

# --- shared pieces -----------------------------------------------------------------------------


def one_of(a: str, b: str) -> dict[str, Any]:
    """JSON Schema for "send `a` or `b`, not both": a Struct's `schema_extra` (the handler's
    parse enforces it; the generated schemas state it)."""
    return {"anyOf": [{"required": [a]}, {"required": [b]}], "not": {"required": [a, b]}}


Rows = Annotated[list[list[float]], Meta(description="N rows of numbers, one row per node")]
EdgeIndex = Annotated[
    list[list[int]],
    Meta(
        min_length=2,
        max_length=2,
        description="[[source ids], [target ids]], two lists of equal length; ids are 0..N-1",
    ),
]
NodeIds = Annotated[
    list[int], Meta(min_length=1, description="node ids to answer for (default: every node)")
]
Vec3 = Annotated[list[float], Meta(min_length=3, max_length=3, description="[x, y, z]")]
TopK = Annotated[int, Meta(ge=1, description="how many classes to return (clamped to C)")]
Probabilities = Annotated[dict[str, float], Meta(description="{label: probability}")]


class Error(Struct):
    """Every 4xx/5xx answer of a handler: the field at fault and what was wrong with it."""

    code: int
    field: Annotated[str, Meta(description='top-level field, "instances[i].x", or "body"')]
    error: Annotated[str, Meta(description='"<field>: <problem>", with the path of the value')]


class Instances(Struct, Generic[T]):
    """The Vertex AI envelope: several request objects in one body, answered in order."""

    instances: Annotated[list[T], Meta(min_length=1)]


class Predictions(Struct, Generic[T]):
    """The answer to an Instances body: one response object per instance, in order."""

    predictions: list[T]


# --- graph node classification (cora_gcn, cora_gat, citeseer_gcn) -----------------------------


class NodeRequest(Struct, kw_only=True):
    """One graph: dense `x` or sparse `x_sparse` (+ `x_values`), edges, optional node ids."""

    x: Optional[Annotated[Rows, Meta(description="N rows of feature_dim numbers")]] = None
    x_sparse: Optional[
        Annotated[list[list[int]], Meta(description="per node, its non-zero feature indices")]
    ] = None
    x_values: Optional[
        Annotated[
            list[list[float]], Meta(description="per node, the values of x_sparse (default 1.0)")
        ]
    ] = None
    edge_index: EdgeIndex
    nodes: Optional[NodeIds] = None

    schema_extra: ClassVar[dict[str, Any]] = one_of("x", "x_sparse")


class NodePrediction(Struct):
    """One requested node's class."""

    node: int
    label: str
    probabilities: Probabilities


class NodeResponse(Struct):
    """One prediction per requested node, in the order asked (every node by default)."""

    predictions: list[NodePrediction]


# --- graph classification (mutag_gcn) ----------------------------------------------------------


class GraphRequest(Struct, kw_only=True):
    """One molecule: one-hot `x` or `atoms` symbols, bonds both ways, optional edge labels."""

    x: Optional[Annotated[Rows, Meta(description="N one-hot rows over meta.json's atom table")]] = (
        None
    )
    atoms: Optional[Annotated[list[str], Meta(description="N symbols of the atom table")]] = None
    edge_index: EdgeIndex
    edge_labels: Optional[
        Annotated[
            list[Union[str, int]],
            Meta(description="one per edge: a bond name of meta.json, or its index"),
        ]
    ] = None

    schema_extra: ClassVar[dict[str, Any]] = one_of("x", "atoms")


class ClassResponse(Struct):
    """The class of a whole input and the probability of every class."""

    label: str
    probabilities: Probabilities


# --- molecular energy (qm9_et) -----------------------------------------------------------------


class MoleculeRequest(Struct, kw_only=True):
    """One molecule: `z` atomic numbers or `atoms` symbols, positions in Å, optional forces."""

    z: Optional[Annotated[list[int], Meta(description="N atomic numbers")]] = None
    atoms: Optional[Annotated[list[str], Meta(description="N element symbols")]] = None
    pos: Optional[Annotated[list[Vec3], Meta(description="N positions [x, y, z] in Å")]] = None
    forces: Optional[Annotated[bool, Meta(description="also return -dE/dpos")]] = None

    # pos is optional to the type only so that its absence gets the handler's own message.
    schema_extra: ClassVar[dict[str, Any]] = {**one_of("z", "atoms"), "required": ["pos"]}


class MoleculeResponse(Struct, kw_only=True, omit_defaults=True):
    """The total energy U0, and the forces on each atom when asked."""

    energy: float
    unit: Literal["eV"]
    forces: Union[Annotated[list[Vec3], Meta(description="N rows, eV/Å (-dE/dpos)")], UnsetType] = (
        UNSET
    )


# --- text classification (imdb_bert, imdb_bert_int8) -------------------------------------------


class TextRequest(Struct):
    """One review."""

    text: str


class TextResponse(Struct):
    """The label, its probability, and every label's probability."""

    label: str
    score: float
    probabilities: Probabilities


# --- image classification (flowers_cnn, flowers_vit) -------------------------------------------


class B64(Struct):
    """TF Serving's `{"b64": "..."}` wrapper."""

    b64: str


Base64 = Annotated[
    Union[str, B64], Meta(description="base64 (standard or URL-safe, data: URL allowed)")
]


class ImageRequest(Struct, kw_only=True):
    """One image in base64, under `b64`, `image` or `image_bytes`, and optional k."""

    b64: Optional[Base64] = None
    image: Optional[Base64] = None
    image_bytes: Optional[Base64] = None
    topk: Optional[TopK] = None

    schema_extra: ClassVar[dict[str, Any]] = {
        "anyOf": [{"required": [f]} for f in ("b64", "image", "image_bytes")]
    }


class ImageParameters(Struct, kw_only=True):
    """The envelope's `parameters`: the default k of its instances."""

    topk: Optional[TopK] = None


class ImageInstances(Struct, kw_only=True):
    """The Vertex AI envelope of images, with its `parameters`."""

    instances: Annotated[list[ImageRequest], Meta(min_length=1)]
    parameters: Optional[ImageParameters] = None


class ImageEnvelopeParameters(Struct, kw_only=True):
    """Only the `parameters` of an ImageInstances body (its instances are parsed one by one)."""

    parameters: Optional[ImageParameters] = None


class Label(Struct):
    """A class and its probability."""

    label: str
    probability: float


class ImageResponse(Struct):
    """The top class, and the top k classes in order."""

    label: str
    probability: float
    top_k: list[Label]


# --- Open Inference Protocol v2 (any model; oip_v2.SPECS declares each model's tensors) -------
# oip_v2 decodes v2 bodies by hand, naming the tensor at fault, and stays standard-library only
# for serve/v2_metadata.py; these Structs are the protocol's documents (docs/openapi.json), and
# the tests check real v2 answers against them.

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32",
    "FP64", "BYTES",
]  # fmt: skip
Dims = Annotated[list[Annotated[int, Meta(ge=-1)]], Meta(description="-1: any size")]


class V2InputTensor(Struct, kw_only=True):
    """One named input: `data` flat (row-major) or nested, or `parameters.binary_data_size`
    bytes of the body after the JSON header (the binary tensor extension)."""

    name: str
    datatype: Datatype
    shape: list[Annotated[int, Meta(ge=0)]]
    data: Union[list[Any], UnsetType] = UNSET
    parameters: Optional[dict[str, Any]] = None


class V2RequestedOutput(Struct, kw_only=True):
    """An output to return (all when `outputs` is absent)."""

    name: str
    parameters: Optional[dict[str, Any]] = None


class V2InferRequest(Struct, kw_only=True):
    """An Open Inference Protocol v2 request: the model's input tensors (GET /v2/models/{m})."""

    id: Optional[str] = None
    inputs: Annotated[list[V2InputTensor], Meta(min_length=1)]
    outputs: Optional[list[V2RequestedOutput]] = None
    parameters: Optional[dict[str, Any]] = None


class V2OutputTensor(Struct, kw_only=True, omit_defaults=True):
    """One named output, always JSON `data`; `parameters.labels`: the classes' order."""

    name: str
    datatype: Datatype
    shape: list[Annotated[int, Meta(ge=0)]]
    data: list[Any]
    parameters: Optional[dict[str, Any]] = None


class V2InferResponse(Struct, kw_only=True):
    """The answer to a V2InferRequest: the request's `id` ("" when it had none)."""

    model_name: str
    model_version: str
    id: str
    outputs: list[V2OutputTensor]


class V2TensorMetadata(Struct):
    """A declared tensor: its datatype and shape (-1: any size)."""

    name: str
    datatype: Datatype
    shape: Dims


class V2ModelMetadata(Struct):
    """GET /v2/models/{m}: the tensors the model takes and answers."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ModelReady(Struct, kw_only=True, omit_defaults=True):
    """GET /v2/models/{m}/ready: 200 when ready, 503 with the reason otherwise."""

    name: str
    ready: bool
    error: Union[str, UnsetType] = UNSET


class V2Live(Struct):
    """GET /v2/health/live (TorchServe's frontend answers it itself)."""

    live: bool


class V2Ready(Struct):
    """GET /v2/health/ready (TorchServe's frontend: up, whatever the models' state)."""

    ready: bool


# --- families: which handler speaks which contract ---------------------------------------------


@dataclass(frozen=True)
class Family:
    """One handler's contract: its JSON request and response, envelope, and other bodies."""

    request: type
    response: type
    envelope: Any
    # Other media types the handler reads, each with what it takes (OpenAPI only).
    bodies: dict[str, str] = field(default_factory=dict)


XYZ_BODY = "a standard .xyz file: atom count, comment line, `symbol x y z` lines (Å)"
IMAGE_BODY = "the encoded image file (JPEG, PNG, WebP, GIF, BMP)"

# Keyed by the handler's module name (archive.yaml's `handler:`), so the registry of served models
# stays the one list: every model whose handler is named here has this contract.
FAMILIES: dict[str, Family] = {
    "node_classifier": Family(NodeRequest, NodeResponse, Instances[NodeRequest]),
    "graph_classifier": Family(GraphRequest, ClassResponse, Instances[GraphRequest]),
    "molecule_energy": Family(
        MoleculeRequest,
        MoleculeResponse,
        Instances[MoleculeRequest],
        {t: XYZ_BODY for t in ("text/plain", "chemical/x-xyz", "text/x-xyz")},
    ),
    "text_classifier": Family(
        TextRequest, TextResponse, Instances[TextRequest], {"text/plain": "the review, UTF-8"}
    ),
    "image_classifier": Family(
        ImageRequest,
        ImageResponse,
        ImageInstances,
        {
            "image/*": IMAGE_BODY,
            "application/octet-stream": IMAGE_BODY,
            "multipart/form-data": "the file in a form field `data` (or `file`, `image`)",
        },
    ),
}


# --- validation --------------------------------------------------------------------------------

# What msgspec names a JSON type, as a message says what a value is not.
NOUNS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "array": "a list",
    "object": "an object",
    "null": "null",
}
_PATH = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\.\"([^\"]*)\"")


def _segments(path: str) -> list[Any]:
    """`$.x[3][1]` -> ["x", 3, 1]: keys and list indices of msgspec's error path."""
    return [
        m.group(1) or m.group(3) if m.group(2) is None else int(m.group(2))
        for m in _PATH.finditer(path[1:])
    ]


def _value_at(payload: Any, segments: list[Any]) -> Any:
    for s in segments:
        payload = payload[s]
    return payload


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def request_error(err: msgspec.ValidationError, payload: Any) -> RequestError:
    """msgspec's `Expected `int`, got `float` - at `$.x[3][1]`` as today's error of field x.

    The field is the path's keys down to its first list index: `x` for `$.x[3][1]`,
    `parameters.topk` for `$.parameters.topk`; the problem names the full path and the value.
    """
    message, _, path = str(err).partition(" - at `")
    segments = _segments(path.rstrip("`") or "$")
    missing = re.fullmatch(r"Object missing required field `(\w+)`", message)
    if missing:
        segments.append(missing.group(1))
    if not segments:
        return RequestError("body", (message[0].lower() + message[1:]).replace("`", ""))
    keys = next((segments[:i] for i, s in enumerate(segments) if isinstance(s, int)), segments)
    top = ".".join(str(k) for k in keys)
    where = top + "".join(
        f"[{s}]" if isinstance(s, int) else f".{s}" for s in segments[len(keys) :]
    )
    if missing:
        return RequestError(top, "missing: required" if where == top else f"{where} is missing")
    try:
        raw = _value_at(payload, segments)
    except (KeyError, IndexError, TypeError):
        raw = None
    value = _short(raw)
    typed = re.fullmatch(r"Expected `([^`]+)`, got `(\w+)`", message)
    if typed:
        # "str | object | null": null stands for an absent optional field, not a choice to name.
        kinds = [NOUNS.get(k, k) for k in typed[1].split(" | ") if k != "null"] or ["null"]
        return RequestError(top, f"{where} = {value} is not {' or '.join(kinds)}")
    sized = re.fullmatch(r"Expected `array` of length (.+)", message)
    if sized:
        count = len(raw) if isinstance(raw, list) else "?"
        return RequestError(top, f"{where} has {count} items, expected {sized[1]}")
    ranged = re.fullmatch(r"Expected `(\w+)` ([<>]=? .+)", message)
    if ranged:
        return RequestError(top, f"{where} = {value} is out of range: expected {ranged[2]}")
    problem = (message[0].lower() + message[1:]).replace("`", "")
    return RequestError(top, f"{where} = {value}: {problem}")


def validate(payload: dict[str, Any], type_: type[T]) -> T:
    """One request object as the contract's Struct, or the RequestError naming what is wrong.

    `payload` is already parsed, strictly, by JsonBatchHandler's `loads` (duplicate keys,
    huge integers and deep nesting refused there); unknown fields are ignored, as before.
    """
    try:
        return msgspec.convert(payload, type_)
    except msgspec.ValidationError as e:
        raise request_error(e, payload) from None
