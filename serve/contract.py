"""Writes the JSON Schemas and the OpenAPI document of the bundle from handlers/contract.py.

docs/schemas/<model>.request.json and .response.json for every served model, docs/schemas/
error.json, and docs/openapi.json (OpenAPI 3.1) for the inference routes, native and v2.
Generated, never edited: tests/unit/handlers/test_contract.py fails when a committed file
differs from what this writes.
Usage: python -m serve.contract [--check]
"""

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from serve.config import ROOT
from train.core.registry import served_models, spec

sys.path.insert(0, str(ROOT / "handlers"))
import contract  # noqa: E402
from contract import FAMILIES, Error, Family, Predictions  # noqa: E402

SCHEMAS = ROOT / "docs" / "schemas"
OPENAPI = ROOT / "docs" / "openapi.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
Model = tuple[str, Family]


def models() -> list[Model]:
    """Every served model (the registry) with its handler's contract."""
    return [(name, FAMILIES[Path(spec(name).handler).stem]) for name in sorted(served_models())]


def answers(family: Family) -> list[Any]:
    """The 200 bodies of a model: one response, or `{"predictions": [...]}` for instances."""
    return [family.response, Predictions[family.response]]  # type: ignore[name-defined]


def amended(defs: dict[str, Any]) -> dict[str, Any]:
    """The definitions with each Struct's `schema_extra` (what its types cannot say) merged in."""
    for name, definition in defs.items():
        definition.update(getattr(getattr(contract, name, None), "schema_extra", {}))
    return defs


def schema(title: str, types: list[Any]) -> dict[str, Any]:
    """A standalone JSON Schema accepting any of `types`, with its definitions inline."""
    refs, defs = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    return {"$schema": DRAFT, "title": title, "anyOf": refs, "$defs": amended(defs)}


def schemas() -> dict[Path, dict[str, Any]]:
    """Each model's request and response schema, and the error schema, by file."""
    out = {SCHEMAS / "error.json": schema("error (4xx, 5xx)", [Error])}
    for name, family in models():
        out[SCHEMAS / f"{name}.request.json"] = schema(
            f"{name} request (application/json)", [family.request, family.envelope]
        )
        out[SCHEMAS / f"{name}.response.json"] = schema(f"{name} response (200)", answers(family))
    return out


class FrontendError(msgspec.Struct):
    """What TorchServe's Java frontend answers itself, before any handler: a bad token (400),
    a full queue (503), a dead worker (507), a form it cannot decode (500)."""

    code: int
    type: str
    message: str


def ref(t: Any) -> dict[str, str]:
    """An OpenAPI reference to the component of `t`."""
    [one], _ = msgspec.json.schema_components([t], ref_template="#/components/schemas/{name}")
    return one


def errors() -> dict[str, Any]:
    body = {"application/json": {"schema": ref(Error)}}
    either = {"application/json": {"schema": {"anyOf": [ref(Error), ref(FrontendError)]}}}
    frontend = {"application/json": {"schema": ref(FrontendError)}}
    return {
        "400": {
            "description": "bad input (the handler: the field and the problem), or a missing or"
            " wrong token (the frontend)",
            "content": either,
        },
        "503": {
            "description": "the model's queue is full, or it has no worker",
            "content": frontend,
        },
        "507": {"description": "the batch's worker died; retry", "content": frontend},
        "413": {
            "description": "more nodes, atoms, instances or bytes than allowed",
            "content": body,
        },
        "500": {
            "description": "the forward pass failed on this input alone (the handler), or a form"
            " body the frontend could not decode",
            "content": either,
        },
    }


def predictions(models_: list[Model]) -> dict[str, Any]:
    """POST /predictions/<model> for every model: TorchServe's native inference route."""
    paths = {}
    for name, family in models_:
        content: dict[str, Any] = {
            "application/json": {"schema": {"anyOf": [ref(family.request), ref(family.envelope)]}}
        }
        for media, what in family.bodies.items():
            content[media] = {"schema": {"type": "string", "description": what}}
        paths[f"/predictions/{name}"] = {
            "post": {
                "operationId": f"predict_{name}",
                "summary": f"{name}: {family.request.__doc__}",
                "requestBody": {"required": True, "content": content},
                "responses": {
                    "200": {
                        "description": "the prediction, or one per instance in order",
                        "headers": {
                            "X-Batch-Size": {
                                "description": "how many requests shared the forward pass",
                                "schema": {"type": "integer"},
                            }
                        },
                        "content": {
                            "application/json": {
                                "schema": {"anyOf": [ref(t) for t in answers(family)]}
                            }
                        },
                    },
                    **errors(),
                },
            }
        }
    return paths


def ping(models_: list[Model]) -> dict[str, Any]:
    """GET /ping: TorchServe's health check."""
    healthy = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {
        "/ping": {
            "get": {
                "operationId": "ping",
                "summary": "Healthy once the frontend is up",
                "responses": {
                    "200": {
                        "description": '{"status": "Healthy"}',
                        "content": {"application/json": {"schema": healthy}},
                    }
                },
            }
        }
    }


V2_TYPES = [
    contract.V2InferRequest,
    contract.V2InferResponse,
    contract.V2ModelMetadata,
    contract.V2ModelReady,
    contract.V2Live,
    contract.V2Ready,
]
# GET /v2/models/{m} and /ready: TorchServe answers 404, serve/v2_metadata.py answers them.
V2_METADATA_TAG = "v2-metadata"
V2_METADATA_SERVER = {
    "url": "http://127.0.0.1:8084",
    "description": "serve/v2_metadata.py beside TorchServe (config.properties v2_metadata_address)",
}
BINARY_BODY = (
    "the binary tensor extension: the JSON V2InferRequest (its length in the "
    "Inference-Header-Content-Length header), then each tensor's bytes in input order"
)


def json_of(*types: Any) -> dict[str, Any]:
    """A JSON content object for one type, or any of several."""
    schema = ref(types[0]) if len(types) == 1 else {"anyOf": [ref(t) for t in types]}
    return {"application/json": {"schema": schema}}


def v2(models_: list[Model]) -> dict[str, Any]:
    """The Open Inference Protocol v2 routes: infer and health on TorchServe's inference port,
    model metadata and readiness on the metadata server (docs/contract.md)."""
    model = {
        "name": "model",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [name for name, _ in models_]},
    }
    token = {"description": "a missing or wrong token", "content": json_of(FrontendError)}
    unknown = {"description": "no such model", "content": json_of(FrontendError)}

    def get(op: str, summary: str, ok: dict[str, Any], more: Any = None) -> dict[str, Any]:
        responses = {"200": ok, "400": token, **(more or {})}
        return {"get": {"operationId": op, "summary": summary, "responses": responses}}

    length = {
        "name": "Inference-Header-Content-Length",
        "in": "header",
        "required": False,
        "description": "with a binary body: the size of its JSON header",
        "schema": {"type": "integer", "minimum": 1},
    }
    binary = {"schema": {"type": "string", "format": "binary", "description": BINARY_BODY}}
    infer = {
        "operationId": "v2_infer",
        "summary": "Any model, per request in a batch: tensors in, tensors out (oip_v2.SPECS)",
        "parameters": [model, length],
        "requestBody": {
            "required": True,
            "content": {**json_of(contract.V2InferRequest), "application/octet-stream": binary},
        },
        "responses": {
            "200": {"description": "the outputs", "content": json_of(contract.V2InferResponse)},
            "404": unknown,
            **errors(),
        },
    }
    down = {"description": "TorchServe does not answer", "content": json_of(FrontendError)}
    metadata = get(
        "v2_model_metadata",
        "The model's input and output tensors: names, datatypes, shapes",
        {"description": "the metadata", "content": json_of(contract.V2ModelMetadata)},
        {"404": unknown, "503": down},
    )
    not_ready = {
        "description": "not ready and why, or TorchServe does not answer",
        "content": json_of(contract.V2ModelReady, FrontendError),
    }
    ready = get(
        "v2_model_ready",
        "200 once all the model's workers are READY",
        {"description": "ready", "content": json_of(contract.V2ModelReady)},
        {"404": unknown, "503": not_ready},
    )
    for route in (metadata, ready):
        route["get"]["parameters"] = [model]
        route["get"]["tags"] = [V2_METADATA_TAG]
    live = {"description": '{"live": true}', "content": json_of(contract.V2Live)}
    up = {"description": '{"ready": true}', "content": json_of(contract.V2Ready)}
    return {
        "/v2/models/{model}/infer": {"post": infer},
        "/v2/health/live": get("v2_live", "TorchServe's frontend is up", live),
        "/v2/health/ready": get("v2_ready", "TorchServe's frontend is up (not the models)", up),
        "/v2/models/{model}": {"servers": [V2_METADATA_SERVER], **metadata},
        "/v2/models/{model}/ready": {"servers": [V2_METADATA_SERVER], **ready},
    }


# The routes of docs/openapi.json, each a function of the served models returning OpenAPI paths;
# their types go in `components()` below.
ROUTES: list[Callable[[list[Model]], dict[str, Any]]] = [predictions, ping, v2]


def components(models_: list[Model]) -> dict[str, Any]:
    """Every type the routes refer to, as OpenAPI components."""
    types: list[Any] = [Error, FrontendError, *V2_TYPES]
    for _, family in models_:
        types += [family.request, family.envelope, *answers(family)]
    _, defs = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    return dict(sorted(amended(defs).items()))


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the inference routes (port 8080)."""
    models_ = models()
    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths.update(route(models_))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "TorchServe bundle: inference API",
            "version": "1.0",
            "description": "Generated by `python -m serve.contract` from handlers/contract.py; "
            "see docs/contract.md.",
        },
        "servers": [{"url": "http://127.0.0.1:8080"}],
        "security": [{"inferenceToken": []}],
        "paths": paths,
        "components": {
            "schemas": components(models_),
            "securitySchemes": {
                "inferenceToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "TorchServe's inference key (`python -m serve token`)",
                }
            },
        },
    }


def documents() -> dict[Path, str]:
    """Every generated file and its text."""
    files = {**schemas(), OPENAPI: openapi()}
    return {
        path: json.dumps(doc, indent=2, ensure_ascii=False) + "\n" for path, doc in files.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file differs")
    args = parser.parse_args()
    docs = documents()
    stale = [p for p, text in docs.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (run python -m serve.contract)", file=sys.stderr)
        sys.exit(1 if stale else 0)
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    for path, text in docs.items():
        path.write_text(text)
    print(f"wrote {len(docs)} files ({len(stale)} changed) under docs/")


if __name__ == "__main__":
    main()
