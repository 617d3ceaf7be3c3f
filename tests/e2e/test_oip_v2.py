"""Open Inference Protocol v2 through the real torchserve, checked with the real tritonclient.

Every model answers `POST /v2/models/{m}/infer`; 16 concurrent v2 requests with different
inputs each get their own answer, equal to the native JSON route's for the same input (the
batch-correctness that TorchServe's own kservev2 envelope lacks, pytorch/serve#2158); bad
tensors get a 400 JSON error naming the tensor. Inputs are the real examples of `make examples`.
"""

import io
import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from serve.client import exchange
from serve.config import read_properties
from tests.e2e.ts_grpc import bearer, channel, compile_stubs
from train.core.registry import specs

pytestmark = pytest.mark.e2e
VARIANTS = 16
JSON = {"Content-Type": "application/json"}


def meta(server, name: str) -> dict[str, Any]:
    return json.loads((Path(server.artifacts) / name / "meta.json").read_text())


def native_variants(examples_dir: Path, name: str, m: dict[str, Any]) -> list[Any]:
    """VARIANTS different native requests of a model, from its real example."""
    entry = json.loads((examples_dir / "index.json").read_text())[name]
    raw = (examples_dir / entry["file"]).read_bytes()
    if entry["content_type"].startswith("image/"):
        photo = Image.open(io.BytesIO(raw)).convert("RGB")
        out = []
        for i in range(VARIANTS):  # a different crop each: a different image, a different answer
            buf = io.BytesIO()
            photo.crop((4 * i, 3 * i, photo.width - i, photo.height)).save(buf, "PNG")
            out.append(buf.getvalue())
        return out
    if entry["content_type"].startswith("text/"):
        text = raw.decode()
        return [{"text": f"{text[: 200 + 40 * i]}"} for i in range(VARIANTS)]
    body = json.loads(raw)
    if "pos" in body:  # qm9: stretch the molecule a little more each time; half ask for forces
        z = body.get("z") or [m["elements"][a] for a in body["atoms"]]
        return [
            {
                "z": z,
                "pos": [[c * (1 + 0.01 * i) for c in p] for p in body["pos"]],
                "forces": i % 2 == 0,
            }
            for i in range(VARIANTS)
        ]
    if "x_sparse" in body or "nodes" in body:  # node classification: a different node each
        x = body.get("x")
        if x is None:
            x = [[0.0] * m["feature_dim"] for _ in body["x_sparse"]]
            for row, cols in zip(x, body["x_sparse"]):
                for c in cols:
                    row[c] = 1.0
        n = len(x)
        return [
            {"x": x, "edge_index": body["edge_index"], "nodes": [i % n]} for i in range(VARIANTS)
        ]
    # graph classification: the molecule's first n - i atoms (and the bonds among them)
    atoms = body["atoms"]
    out = []
    for i in range(VARIANTS):
        k = max(len(atoms) - i, 2)
        src, dst = body["edge_index"]
        kept = [(s, d) for s, d in zip(src, dst) if s < k and d < k]
        out.append({"atoms": atoms[:k], "edge_index": [[s for s, _ in kept], [d for _, d in kept]]})
    return out


def v2_inputs(native: Any) -> list[triton.InferInput]:
    """The tritonclient inputs carrying a native request's tensors (binary extension)."""
    if isinstance(native, bytes):
        arrays = {"image": np.array([native], dtype=np.object_)}
    else:
        arrays = {}
        for key, value in native.items():
            if key in ("x", "pos"):
                arrays[key] = np.array(value, dtype=np.float32)
            elif key in ("edge_index", "nodes", "z"):
                arrays[key] = np.array(value, dtype=np.int64)
            elif key == "forces":
                arrays[key] = np.array([value], dtype=bool)
            else:  # text, atoms
                arrays[key] = np.array(
                    value if isinstance(value, list) else [value], dtype=np.object_
                )
    out = []
    for key, arr in arrays.items():
        dtype = {np.float32: "FP32", np.int64: "INT64", np.bool_: "BOOL"}.get(
            arr.dtype.type, "BYTES"
        )
        t = triton.InferInput(key, list(arr.shape), dtype)
        t.set_data_from_numpy(arr, binary_data=key != "text")  # text in JSON, the rest binary
        out.append(t)
    return out


def native_answer(server, name: str, native: Any) -> dict[str, Any]:
    ctype = "image/png" if isinstance(native, bytes) else "application/json"
    status, body, _ = server.predict(name, native, ctype)
    assert status == 200, body
    return body


def assert_same(result: triton.InferResult, native: dict[str, Any], labels: list[str]) -> None:
    """A v2 answer carries the native route's answer for the same input."""
    outputs = {o["name"]: o for o in result.get_response()["outputs"]}
    if "energy" in outputs:
        assert result.as_numpy("energy")[0] == pytest.approx(native["energy"], rel=1e-5, abs=1e-4)
        if "forces" in native:
            np.testing.assert_allclose(result.as_numpy("forces"), native["forces"], atol=1e-4)
        else:
            assert "forces" not in outputs
        return
    preds = native["predictions"] if "predictions" in native else [native]
    got = [s.decode() if isinstance(s, bytes) else s for s in result.as_numpy("label").reshape(-1)]
    assert got == [p["label"] for p in preds]
    probs = result.as_numpy("probabilities").reshape(len(preds), len(labels))
    for row, p in zip(probs, preds):
        # Images: the native answer has the top k classes; v2 has all of them.
        want = p.get("probabilities") or {t["label"]: t["probability"] for t in p["top_k"]}
        got_p = dict(zip(labels, row.tolist()))
        assert sum(got_p.values()) == pytest.approx(1.0, abs=1e-4)
        assert [got_p[c] for c in want] == pytest.approx(list(want.values()), abs=1e-5)
    if "node" in outputs:
        assert result.as_numpy("node").tolist() == [p["node"] for p in preds]


@pytest.fixture(scope="module")
def v2(every_model_server):
    url = every_model_server.inference.removeprefix("http://")
    client = triton.InferenceServerClient(url, concurrency=VARIANTS, network_timeout=120)
    yield client, {"Authorization": f"Bearer {every_model_server.token()}"}
    client.close()


MODELS = [s.name for s in specs()]


@pytest.mark.parametrize("name", MODELS)
def test_every_model_answers_v2_like_its_native_route(every_model_server, examples_dir, v2, name):
    client, headers = v2
    m = meta(every_model_server, name)
    native = native_variants(examples_dir, name, m)[0]
    result = client.infer(name, v2_inputs(native), headers=dict(headers), request_id="one")
    assert result.get_response()["model_name"] == name and result.get_response()["id"] == "one"
    labels = m.get("labels", [])
    if isinstance(native, bytes) or "text" in native:
        labels = result.get_output("probabilities")["parameters"]["labels"].split(",")
    assert_same(result, native_answer(every_model_server, name, native), labels)


@pytest.mark.parametrize("name", MODELS)
def test_16_concurrent_v2_requests_each_get_their_own_answer(
    every_model_server, examples_dir, v2, name
):
    client, headers = v2
    m = meta(every_model_server, name)
    natives = native_variants(examples_dir, name, m)
    pending = [client.async_infer(name, v2_inputs(n), headers=dict(headers)) for n in natives]
    results = [p.get_result() for p in pending]
    answers = [native_answer(every_model_server, name, n) for n in natives]
    labels = results[0].get_output("probabilities")
    labels = labels["parameters"]["labels"].split(",") if labels else []
    for result, answer in zip(results, answers):
        assert_same(result, answer, labels)
    # The variants differ, so a mixed-up batch could not pass: at least two answers differ.
    assert len({json.dumps(a, sort_keys=True) for a in answers}) > 1


def cora_inputs(examples_dir, server) -> dict[str, np.ndarray]:
    native = native_variants(examples_dir, "cora_gcn", meta(server, "cora_gcn"))[0]
    return {
        "x": np.array(native["x"], dtype=np.float32),
        "edge_index": np.array(native["edge_index"], dtype=np.int64),
    }


def tensor(name: str, arr: np.ndarray, datatype: str, shape=None, binary=True):
    t = triton.InferInput(name, list(arr.shape), datatype)
    t.set_data_from_numpy(arr, binary_data=binary)
    if shape is not None:
        t.set_shape(shape)  # a tensor that lies about its shape
    return t


@pytest.mark.parametrize(
    ("case", "tensor_name", "says"),
    [
        ("wrong datatype", "x", "expected FP32"),
        ("wrong shape", "edge_index", "expected [2, N]"),
        ("missing tensor", "edge_index", "missing input tensor"),
        ("lying shape, binary", "x", "bytes of binary data"),
        ("lying shape, JSON", "x", "elements; shape"),
    ],
)
def test_bad_v2_tensors_get_a_400_naming_the_tensor(
    every_model_server, examples_dir, v2, case, tensor_name, says
):
    client, headers = v2
    a = cora_inputs(examples_dir, every_model_server)
    n, f = a["x"].shape
    x = tensor("x", a["x"], "FP32")
    ei = tensor("edge_index", a["edge_index"], "INT64")
    inputs = {
        "wrong datatype": [tensor("x", a["x"].astype(np.float64), "FP64"), ei],
        "wrong shape": [x, tensor("edge_index", a["edge_index"].reshape(-1, 1), "INT64")],
        "missing tensor": [x],
        "lying shape, binary": [tensor("x", a["x"], "FP32", [n + 1, f]), ei],
        "lying shape, JSON": [tensor("x", a["x"], "FP32", [n + 1, f], binary=False), ei],
    }[case]
    with pytest.raises(InferenceServerException) as e:
        client.infer("cora_gcn", inputs, headers=dict(headers))
    assert e.value.status() == "400"
    assert f"{tensor_name}: " in e.value.message() and says in e.value.message()


def test_a_bad_v2_body_gets_the_json_error_and_the_server_keeps_serving(every_model_server):
    url = f"{every_model_server.inference}/v2/models/mutag_gcn/infer"
    body = {"inputs": [{"name": "atoms", "datatype": "BYTES", "shape": [2], "data": ["C"]}]}
    status, raw, _ = exchange(
        url, every_model_server.token(), "POST", json.dumps(body).encode(), JSON
    )
    assert status == 400
    assert json.loads(raw) == {
        "code": 400,
        "field": "atoms",
        "error": "atoms: data has 1 elements; shape [2] says 2",
    }
    good = {
        "inputs": [
            {"name": "atoms", "datatype": "BYTES", "shape": [2], "data": ["C", "N"]},
            {"name": "edge_index", "datatype": "INT64", "shape": [2, 2], "data": [0, 1, 1, 0]},
        ]
    }
    status, raw, _ = exchange(
        url, every_model_server.token(), "POST", json.dumps(good).encode(), JSON
    )
    assert status == 200 and json.loads(raw)["outputs"][0]["name"] == "label"


def test_the_v2_route_refuses_a_native_body_and_predictions_ignores_the_route_header(
    every_model_server, examples_dir
):
    """A photo's bytes or a native JSON object sent to /v2/.../infer is a 400, not a native
    answer (schemathesis found the photo answered natively); the frontend sets the route header
    itself and drops one a client sends to /predictions."""
    server, token = every_model_server, every_model_server.token()
    photo_bytes = (examples_dir / "flowers_cnn.jpg").read_bytes()
    octet = {"Content-Type": "application/octet-stream"}
    status, raw, _ = exchange(
        f"{server.inference}/v2/models/flowers_cnn/infer", token, "POST", photo_bytes, octet
    )
    assert status == 400 and json.loads(raw)["field"] == "Content-Type", raw
    status, raw, _ = exchange(
        f"{server.inference}/predictions/flowers_cnn", token, "POST", photo_bytes, octet
    )
    assert status == 200 and "label" in json.loads(raw)
    native = (examples_dir / "mutag_gcn.json").read_bytes()
    status, raw, _ = exchange(
        f"{server.inference}/v2/models/mutag_gcn/infer", token, "POST", native, JSON
    )
    assert status == 400 and json.loads(raw)["field"] == "inputs", raw
    spoofed = {**JSON, "Bundle-Oip-Route": "infer"}
    status, raw, _ = exchange(
        f"{server.inference}/predictions/mutag_gcn", token, "POST", native, spoofed
    )
    assert status == 200 and "label" in json.loads(raw), raw


def test_what_the_frontend_serves_of_v2_besides_infer(every_model_server, v2):
    """Health is served (with the token, as the rest); model metadata and ready are not."""
    client, headers = v2
    assert client.is_server_live(headers=dict(headers)) and client.is_server_ready(
        headers=dict(headers)
    )
    # tritonclient adds Inference-Header-Content-Length to the headers dict it is given, so
    # every call here passes a copy.
    no_token = exchange(f"{every_model_server.inference}/v2/health/ready", None, "GET")[0]
    assert no_token == exchange(f"{every_model_server.inference}/ping", None, "GET")[0] != 200
    for path in ("/v2/models/cora_gcn", "/v2/models/cora_gcn/ready"):
        status, _, _ = exchange(
            f"{every_model_server.inference}{path}", every_model_server.token(), "GET"
        )
        assert status == 404, path


# gRPC: TorchServe's own OIP service (open_inference_grpc.proto), which tritonclient cannot reach.


@pytest.fixture(scope="module")
def oip_grpc(every_model_server, tmp_path_factory):
    """(messages, stub, token metadata, channel) of the OIP gRPC service on the inference port."""
    pb, pb_grpc = compile_stubs(tmp_path_factory.mktemp("oip_stubs"))["open_inference_grpc"]
    props = read_properties(every_model_server.log_dir.parent / "config.properties")
    chan = channel(props["grpc_inference_port"])
    yield pb, pb_grpc.GRPCInferenceServiceStub(chan), bearer(every_model_server.token()), chan
    chan.close()


def grpc_tensor(pb, name, datatype, shape, **contents):
    return pb.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype, shape=shape, contents=pb.InferTensorContents(**contents)
    )


def test_grpc_oip_infer_answers_like_the_native_route(every_model_server, oip_grpc):
    pb, stub, md, _ = oip_grpc
    native = {"atoms": ["C", "N", "O"], "edge_index": [[0, 1, 1, 2], [1, 0, 2, 1]]}
    inputs = [
        grpc_tensor(
            pb, "atoms", "BYTES", [3], bytes_contents=[a.encode() for a in native["atoms"]]
        ),
        grpc_tensor(pb, "edge_index", "INT64", [2, 4], int64_contents=[0, 1, 1, 2, 1, 0, 2, 1]),
    ]
    resp = stub.ModelInfer(
        pb.ModelInferRequest(model_name="mutag_gcn", id="g1", inputs=inputs),
        metadata=md,
        timeout=60,
    )
    want = native_answer(every_model_server, "mutag_gcn", native)
    outs = {o.name: o for o in resp.outputs}
    assert resp.id == "g1" and resp.model_name == "mutag_gcn"
    labels = list(want["probabilities"])
    assert list(outs["probabilities"].contents.fp32_contents) == pytest.approx(
        [want["probabilities"][c] for c in labels], abs=1e-5
    )
    # TorchServe's GRPCJob writes each BYTES element as its JSON text, quotes included.
    assert outs["label"].contents.bytes_contents[0] == json.dumps(want["label"]).encode()


def test_grpc_oip_bad_tensor_gets_an_error_output_and_the_worker_keeps_serving(oip_grpc):
    """TorchServe's gRPC OIP service drops the status and reads every answer as a v2
    response; the handler sends the JSON error as an `error` output (docs/contract.md)."""
    pb, stub, md, _ = oip_grpc
    bad = [grpc_tensor(pb, "atoms", "BYTES", [3], bytes_contents=[b"C", b"N"])]
    good = [
        grpc_tensor(pb, "atoms", "BYTES", [2], bytes_contents=[b"C", b"N"]),
        grpc_tensor(pb, "edge_index", "INT64", [2, 2], int64_contents=[0, 1, 1, 0]),
    ]
    for _ in range(3):  # a bad answer that broke the frontend would restart the worker
        resp = stub.ModelInfer(
            pb.ModelInferRequest(model_name="mutag_gcn", inputs=bad), metadata=md, timeout=60
        )
        [out] = resp.outputs
        # GRPCJob writes a BYTES element as its JSON text: the error, JSON-encoded twice.
        error = json.loads(json.loads(out.contents.bytes_contents[0]))
        assert out.name == "error" and error["code"] == 400 and error["field"] == "atoms"
        assert "atoms: data has 2 elements" in error["error"]
        resp = stub.ModelInfer(
            pb.ModelInferRequest(model_name="mutag_gcn", inputs=good), metadata=md, timeout=60
        )
        assert {o.name for o in resp.outputs} == {"label", "probabilities"}


def test_grpc_oip_health_ready_and_its_limits(oip_grpc):
    """Served: live, ready, model ready (token checked); metadata lists no tensors; the
    protocol's own service name (what tritonclient calls) is not served."""
    pb, stub, md, chan = oip_grpc
    assert stub.ServerLive(pb.ServerLiveRequest(), metadata=md, timeout=30).live
    assert stub.ModelReady(pb.ModelReadyRequest(name="cora_gcn"), metadata=md, timeout=30).ready
    with pytest.raises(grpc.RpcError) as e:
        stub.ServerLive(pb.ServerLiveRequest(), timeout=30)
    assert e.value.code() != grpc.StatusCode.OK  # no token
    meta_resp = stub.ModelMetadata(pb.ModelMetadataRequest(name="cora_gcn"), metadata=md)
    assert meta_resp.name == "cora_gcn" and not meta_resp.inputs and not meta_resp.outputs
    standard = chan.unary_unary("/inference.GRPCInferenceService/ServerLive")
    with pytest.raises(grpc.RpcError) as e:
        standard(b"", metadata=md, timeout=30)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
