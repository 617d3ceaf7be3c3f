"""The bounded CI fuzz run: 1,500 generated malformed requests (`make fuzz` sends 10,000)
against the real torchserve serving every model, from 8 concurrent clients."""

import json

import pytest

from fuzz.cases import generate, load_seeds
from fuzz.run import held, run
from fuzz.schema import run_schemathesis
from serve.client import exchange
from train.core.registry import served_models

pytestmark = pytest.mark.e2e

REQUESTS = 1_500


@pytest.fixture(scope="module")
def report(every_model_server, examples_dir):
    cases = generate(load_seeds(examples_dir, served_models()), REQUESTS, seed_value=13)
    return run(every_model_server, cases, clients=8)


def test_no_5xx_no_connection_failure_no_restart(report):
    assert report["requests"] == REQUESTS
    assert report["failure_counts"] == {}, report["failures"]
    assert report["workers_restarted"] == [] and report["restart_log_lines"] == []
    assert held(report)


def test_every_family_and_model_was_sent_and_mostly_refused(report):
    assert set(report["per_family"]) == {
        "good",
        "structural",
        "bytes",
        "content_type",
        "pathological",
    }
    assert set(report["per_model"]) == set(served_models())
    assert report["good_checked"] == REQUESTS // 10
    assert report["per_family"]["good"] == {"2xx": REQUESTS // 10}
    # Most mutations are refused, each with the field at fault named (not all "body").
    assert report["totals"]["4xx"] > REQUESTS // 2
    for model, fields in report["fields_named"].items():
        assert set(fields) - {"body", "Content-Type"}, f"{model} named only the body"


def test_malformed_forms_are_the_frontends_400_not_500(report):
    # TorchServe's netty form decoder throws on these; the frontend fix (serve/frontend_patch.py)
    # answers 400 with its JSON error where the stock jar answered 500.
    forms = report["per_family"]["content_type"], report["per_family"]["pathological"]
    assert all("5xx" not in counts for counts in forms), forms
    assert report["fields_named"] and any(
        "frontend 400" in fields for fields in report["fields_named"].values()
    ), report["fields_named"]


MALFORMED_FORMS = [
    # a multipart part without a name (netty: NullPointerException in its decoder)
    (
        b"--x\r\nContent-Disposition: form-data\r\n\r\nvalue\r\n--x--\r\n",
        "multipart/form-data; boundary=x",
    ),
    # a part with an empty name
    (
        b'--x\r\nContent-Disposition: form-data; name=""\r\n\r\nv\r\n--x--\r\n',
        "multipart/form-data; boundary=x",
    ),
    # binary bytes sent as a form, and a bad percent escape
    (bytes(range(256)) * 4, "application/x-www-form-urlencoded"),
    (b"a=%zz", "application/x-www-form-urlencoded"),
]


@pytest.mark.parametrize(
    "body,ctype", MALFORMED_FORMS, ids=["nameless", "empty-name", "binary", "escape"]
)
def test_a_malformed_form_is_the_frontends_400_and_the_model_keeps_serving(
    every_model_server, examples_dir, body, ctype
):
    srv = every_model_server
    url = f"{srv.inference}/predictions/flowers_cnn"
    status, answer, _ = exchange(url, srv.token(), "POST", body, {"Content-Type": ctype})
    error = json.loads(answer)
    assert status == 400, error
    assert error["type"] == "BadRequestException", error
    assert error["message"].startswith("Malformed form body: ") and len(error["message"]) < 300
    entry = json.loads((examples_dir / "index.json").read_text())["flowers_cnn"]
    good = (examples_dir / entry["file"]).read_bytes()
    assert (
        exchange(url, srv.token(), "POST", good, {"Content-Type": entry["content_type"]})[0] == 200
    )


def test_schemathesis_finds_no_server_error_and_no_answer_off_its_schema(every_model_server):
    # Generated from docs/openapi.json by schemathesis, valid and invalid bodies per operation.
    out = run_schemathesis(every_model_server, max_examples=10, seed=13)
    assert out["held"], "\n".join(out["report_tail"])
