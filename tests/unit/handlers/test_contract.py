"""The typed contract (handlers/contract.py): the committed schemas are what it generates, real
requests (examples, load-test pools, the README's) validate against them, and msgspec's
errors become the handlers' precise {"code", "field", "error"}."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
from request_error import RequestError

from contract import FAMILIES, NodeRequest, validate
from serve.contract import OPENAPI, SCHEMAS, documents, models
from tests.conftest import ROOT, mirror
from train.core.registry import served_models, spec

VALIDATOR = jsonschema.Draft202012Validator


def schema_of(name: str, kind: str) -> VALIDATOR:
    path = SCHEMAS / (f"{name}.{kind}.json" if name != "error" else "error.json")
    return VALIDATOR(json.loads(path.read_text()))


def test_the_committed_schemas_and_openapi_are_what_the_code_generates():
    stale = [
        str(p.relative_to(ROOT))
        for p, text in documents().items()
        if not p.exists() or p.read_text() != text
    ]
    assert not stale, f"regenerate with `python -m serve.contract`: {stale}"


def test_every_schema_is_valid_and_every_openapi_reference_resolves():
    for path in documents():
        if path != OPENAPI:
            VALIDATOR.check_schema(json.loads(path.read_text()))
    doc = json.loads(OPENAPI.read_text())
    assert doc["openapi"].startswith("3.1")
    assert {f"/predictions/{n}" for n in served_models()} | {"/ping"} <= set(doc["paths"])
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', OPENAPI.read_text()))
    assert refs and refs <= set(doc["components"]["schemas"])
    for schema in doc["components"]["schemas"].values():
        VALIDATOR.check_schema(schema)


def check_request(name: str, body: bytes, ctype: str) -> None:
    """A JSON body validates against the model's schema and its Struct; others are a declared
    media type of the model."""
    family = FAMILIES[Path(spec(name).handler).stem]
    if ctype != "application/json":
        assert ctype in family.bodies or f"{ctype.split('/')[0]}/*" in family.bodies, ctype
        return
    payload = json.loads(body)
    schema_of(name, "request").validate(payload)
    for instance in payload.get("instances", [payload]):
        validate(instance, family.request)


@pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")
def test_every_example_and_pool_body_validates_against_its_schema(tmp_path):
    from train.core.examples import write_examples
    from train.core.pools import write_pools

    for name, entry in write_examples(tmp_path / "examples").items():
        check_request(
            name, (tmp_path / "examples" / entry["file"]).read_bytes(), entry["content_type"]
        )
    index = write_pools(tmp_path / "pool", sorted(served_models()), size=20, seed=0)
    checked = 0
    for name, pool in index.items():
        for p in pool["payloads"]:
            check_request(name, (tmp_path / "pool" / p["file"]).read_bytes(), p["content_type"])
            if "instance" in p:  # the Vertex instance of a non-JSON body
                raw = (tmp_path / "pool" / p["instance"]).read_bytes()
                check_request(name, raw, "application/json")
            checked += 1
    assert checked == 20 * len(index) == 20 * len(served_models())


def readme_contract() -> list[tuple[list[str], list[object]]]:
    """(models, JSON examples) of each `###` subsection of the README's request contract."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Request contract", 1)[1].split("\n## ", 1)[0]
    out = []
    for part in section.split("\n### ")[1:]:
        heading = part.splitlines()[0]
        blocks = re.findall(r"```json\n(.*?)```", part, re.S)
        out.append((re.findall(r"`(\w+)`", heading), [json.loads(b) for b in blocks]))
    return out


def test_the_readme_points_to_the_schemas_and_its_examples_validate():
    readme = (ROOT / "README.md").read_text()
    assert "docs/contract.md" in readme and "docs/schemas/" in readme
    sections = readme_contract()
    assert {m for models_, _ in sections for m in models_} == set(served_models())
    error = schema_of("error", "")
    for names, examples in sections:
        assert examples, f"no JSON example for {names}"
        kinds = set()
        for name in names:
            request, response = schema_of(name, "request"), schema_of(name, "response")
            for ex in examples:
                kind = next(
                    (k for k, s in (("request", request), ("response", response), ("error", error))
                     if s.is_valid(ex)),
                    None,
                )  # fmt: skip
                assert kind, f"README example for {name} matches no schema: {ex}"
                if kind == "request":
                    validate(ex, FAMILIES[Path(spec(name).handler).stem].request)
                kinds.add(kind)
        assert {"request", "response"} <= kinds, names


@pytest.mark.parametrize(
    ("payload", "field", "says"),
    [
        ({"x": [[1, True]], "edge_index": [[0], [0]]}, "x", "x[0][1] = True is not a number"),
        ({"x": [[1]]}, "edge_index", "missing"),
        ({"x": [[1]], "edge_index": [[0]]}, "edge_index", "has 1 items, expected >= 2"),
        ({"x": [[1]], "edge_index": [[0], [0.5]]}, "edge_index", "[1][0] = 0.5 is not an integer"),
        ({"x": [[1]], "edge_index": [[], []], "nodes": []}, "nodes", "expected >= 1"),
        ({"x": [[1, 0]], "edge_index": [[0, 0], [0, 2**70]], "nodes": [1.5]}, "nodes", "nodes[0]"),
        ({"x": "rows", "edge_index": [[], []]}, "x", "x = 'rows' is not a list"),
    ],
)
def test_msgspec_errors_become_the_field_and_the_path_of_the_value(payload, field, says):
    with pytest.raises(RequestError) as e:
        validate(payload, NodeRequest)
    assert e.value.code == 400 and e.value.field == field
    assert says in e.value.problem and str(e.value).startswith(f"{field}: ")


def test_every_served_model_has_a_contract():
    assert [name for name, _ in models()] == sorted(served_models())
