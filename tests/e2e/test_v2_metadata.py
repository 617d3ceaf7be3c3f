"""v2 model metadata and readiness for TorchServe's models (serve/v2_metadata.py), which the
harness starts beside every torchserve; checked with the real tritonclient.

Every model's metadata names exactly the tensors its `/v2/models/{m}/infer` takes and answers;
readiness follows the workers (scaled to 0 and back); tokens follow TorchServe's rule, word for
word: every refusal is TorchServe's own answer to the same header.
"""

import json
import time
import zipfile

import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from serve.client import exchange, parsed
from serve.server import model_names
from tests.e2e.test_oip_v2 import meta, native_variants, v2_inputs

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def md(every_model_server):
    """(tritonclient at the metadata server, the inference token header)."""
    assert every_model_server.v2, "the harness starts a v2 metadata server with torchserve"
    client = triton.InferenceServerClient(every_model_server.v2.removeprefix("http://"))
    yield client, {"Authorization": f"Bearer {every_model_server.token()}"}
    client.close()


def fits(shape: list[int], declared: list[int]) -> bool:
    return len(shape) == len(declared) and all(d in (-1, s) for s, d in zip(shape, declared))


def test_every_model_has_the_metadata_of_what_it_serves(
    every_model_server, every_model_store, examples_dir, md
):
    """Inputs that the infer route takes and outputs it answers, datatypes and shapes."""
    client, auth = md
    infer = triton.InferenceServerClient(
        every_model_server.inference.removeprefix("http://"), network_timeout=120
    )
    names = model_names(every_model_store)
    assert len(names) >= 9
    for name in names:
        got = client.get_model_metadata(name, headers=dict(auth))
        with zipfile.ZipFile(every_model_store / f"{name}.mar") as mar:
            manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))["model"]
        assert got["name"] == name and got["versions"] == [manifest["modelVersion"]]
        declared = {t["name"]: t for t in got["inputs"]}
        m = meta(every_model_server, name)
        if "x" in declared:
            assert declared["x"]["shape"] == [-1, m["feature_dim"]]
        inputs = v2_inputs(native_variants(examples_dir, name, m)[0])
        for t in inputs:
            d = declared[t.name()]
            assert d["datatype"] == t.datatype() and fits(t.shape(), d["shape"]), (name, d)
        result = infer.infer(name, inputs, headers=dict(auth)).get_response()
        outputs = {t["name"]: t for t in got["outputs"]}
        for o in result["outputs"]:
            d = outputs[o["name"]]
            assert d["datatype"] == o["datatype"] and fits(o["shape"], d["shape"]), (name, o)
        if "labels" in m:
            assert outputs["probabilities"]["shape"][-1] == len(m["labels"])
    infer.close()


def test_every_model_is_ready_and_readiness_follows_the_workers(
    every_model_server, every_model_store, md
):
    client, auth = md
    for name in model_names(every_model_store):
        assert client.is_model_ready(name, headers=dict(auth)), name
    mgmt = every_model_server.client()
    url = f"{every_model_server.v2}/v2/models/mutag_gcn/ready"
    try:
        mgmt.scale("mutag_gcn", 0)
        assert not client.is_model_ready("mutag_gcn", headers=dict(auth))
        status, raw, _ = exchange(url, every_model_server.token())
        assert status == 503 and json.loads(raw)["ready"] is False, raw
    finally:
        mgmt.scale("mutag_gcn", 1)
    # The stopped worker may still be listed for a moment after the scale call returns.
    deadline = time.monotonic() + 60
    while not client.is_model_ready("mutag_gcn", headers=dict(auth)):
        assert time.monotonic() < deadline, exchange(url, every_model_server.token())[1]
        time.sleep(0.5)
    status, raw, _ = exchange(url, every_model_server.token())
    assert (status, json.loads(raw)) == (200, {"name": "mutag_gcn", "ready": True})


def test_an_unknown_model_gets_torchserves_404(every_model_server, md):
    client, auth = md
    assert not client.is_model_ready("no_such_model", headers=dict(auth))
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("no_such_model", headers=dict(auth))
    assert e.value.status() == "404"
    for path in ("/v2/models/no_such_model", "/v2/models/no_such_model/ready"):
        status, raw, _ = exchange(f"{every_model_server.v2}{path}", every_model_server.token())
        assert status == 404 and json.loads(raw)["type"] == "ModelNotFoundException", raw
    # Unknown routes under /v2/ and other methods: TorchServe's own JSON errors too.
    status, raw, _ = exchange(f"{every_model_server.v2}/v2/elsewhere", every_model_server.token())
    assert status == 404 and json.loads(raw)["type"] == "ResourceNotFoundException"
    status, raw, _ = exchange(
        f"{every_model_server.v2}/v2/models/mutag_gcn", every_model_server.token(), "POST", b"{}"
    )
    assert status == 405 and json.loads(raw)["code"] == 405


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer not-a-key",
        "Bearer {mgmt}",
        "bearer {inf}",
        "Basic {inf}",
        "Bearer{inf}",
        "Bearer {inf} x",
        "Token {inf}",
    ],
)
def test_a_bad_token_is_refused_as_torchserve_refuses_it(every_model_server, md, authorization):
    """The same header to TorchServe's /ping and to both routes: the same 400 and body."""
    tokens = {"inf": every_model_server.token(), "mgmt": every_model_server.token("management")}
    headers = {} if authorization is None else {"Authorization": authorization.format(**tokens)}
    ts_status, ts_raw, _ = exchange(f"{every_model_server.inference}/ping", headers=headers)
    assert ts_status == 400, ts_raw
    for path in ("/v2/models/mutag_gcn", "/v2/models/mutag_gcn/ready"):
        status, raw, _ = exchange(f"{every_model_server.v2}{path}", headers=headers)
        assert (status, parsed(raw)) == (ts_status, parsed(ts_raw)), (authorization, path)
    client, _ = md
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("mutag_gcn", headers=dict(headers))
    assert e.value.status() == "400"


def test_the_inference_token_with_spaces_is_accepted_as_torchserve_accepts_it(
    every_model_server,
):
    headers = {"Authorization": f"Bearer \t {every_model_server.token()}"}
    assert exchange(f"{every_model_server.inference}/ping", headers=headers)[0] == 200
    status, raw, _ = exchange(f"{every_model_server.v2}/v2/models/mutag_gcn", headers=headers)
    assert status == 200 and json.loads(raw)["name"] == "mutag_gcn", raw
