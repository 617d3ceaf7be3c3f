"""The generated JSON Schemas (docs/schemas/, `python -m serve.contract`) as checks of what the
served models answer: the e2e tests run every /predictions answer through `check_response`."""

import json
from functools import cache
from typing import Any

import jsonschema

from tests.conftest import ROOT

SCHEMAS = ROOT / "docs" / "schemas"


@cache
def validator(stem: str) -> jsonschema.Draft202012Validator:
    """The validator of docs/schemas/<stem>.json."""
    path = SCHEMAS / f"{stem}.json"
    assert path.exists(), f"{path} is missing: is the model registered? (python -m serve.contract)"
    return jsonschema.Draft202012Validator(json.loads(path.read_text()))


def check_response(name: str, status: int, body: Any) -> None:
    """A 200 answer of model `name` (`name/version` too) follows its response schema, and a
    handler's error ({"code", "field", "error"}) follows error.json with its status as code.

    TorchServe's own errors (404, 401, 503: {"code", "type", "message"}) are not the handlers'
    contract and pass unchecked.
    """
    model = name.split("/")[0]
    if status == 200:
        validator(f"{model}.response").validate(body)
    elif isinstance(body, dict) and "field" in body:
        validator("error").validate(body)
        assert body["code"] == status, body
