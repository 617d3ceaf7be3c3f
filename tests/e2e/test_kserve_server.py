"""The same .mar files under KServe's ModelServer (serve/kserve_server.py) and under TorchServe.

One model of each family is served by both: the real torchserve of `every_model_server` and a
real `python -m serve.kserve_server` on free loopback ports, run by the interpreter of the
KServe venv (`make kserve-venv`; requirements/kserve.txt says why it is a venv of its own).
The same requests must get the same answers (numbers within 1e-4) and the same 4xx JSON errors.
"""

import base64
import json
import os
import signal
import subprocess
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.http as triton
import yaml

from serve.client import exchange
from serve.config import ROOT, free_addresses

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# One model of each family.
MODELS = ["cora_gcn", "mutag_gcn", "qm9_et", "imdb_bert_int8", "flowers_cnn"]
KSERVE_PYTHON = Path(os.environ.get("KSERVE_PYTHON", ROOT / ".venv-kserve" / "bin" / "python"))
TOL = 1e-4


def kserve_python() -> Path:
    """The KServe venv's interpreter; the test fails (not skips) when it is missing."""
    probe = [str(KSERVE_PYTHON), "-c", "import kserve"]
    if not KSERVE_PYTHON.exists() or subprocess.run(probe, capture_output=True).returncode:
        pytest.fail(f"{KSERVE_PYTHON} cannot import kserve: run `make kserve-venv`")
    return KSERVE_PYTHON


def two_free_ports() -> tuple[int, int]:
    """Two free, different loopback ports (free_addresses holds each until all are picked)."""
    addrs = free_addresses()
    return int(addrs["grpc_inference_port"]), int(addrs["grpc_management_port"])


@pytest.fixture(scope="module")
def kserve(every_model_store, tmp_path_factory):
    """`python -m serve.kserve_server` on free loopback ports, READY; stopped by SIGTERM."""
    http_port, grpc_port = two_free_ports()
    log = tmp_path_factory.mktemp("kserve") / "kserve.log"
    cmd = [str(kserve_python()), "-m", "serve.kserve_server", "--store", str(every_model_store)]
    cmd += ["--models", ",".join(MODELS), "--http-port", str(http_port)]
    cmd += ["--grpc-port", str(grpc_port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            pytest.fail(f"kserve_server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"kserve_server not ready after 300 s:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    yield {"url": url, "grpc": f"127.0.0.1:{grpc_port}", "proc": proc}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def close(a: Any, b: Any, path: str = "") -> None:
    """Asserts two JSON answers equal: the same keys, strings and shapes; numbers within TOL."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: {a} != {b}"
        for k in a:
            close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]")
    elif isinstance(a, (int, float)) and not isinstance(a, bool):
        assert isinstance(b, (int, float)) and abs(a - b) <= TOL, f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def example(examples_dir: Path, name: str) -> tuple[bytes, str]:
    """The model's real example request: (body, Content-Type)."""
    entry = json.loads((examples_dir / "index.json").read_text())[name]
    return (examples_dir / entry["file"]).read_bytes(), entry["content_type"]


def both(ts_server, kserve, name: str, body: bytes, ctype: str) -> tuple[tuple, tuple]:
    """(status, JSON) from TorchServe's /predictions and from KServe's v1 :predict."""
    status, answer, _ = ts_server.predict(name, body, ctype)
    r = requests.post(
        f"{kserve['url']}/v1/models/{name}:predict",
        data=body,
        headers={"Content-Type": ctype},
        timeout=120,
    )
    return (status, answer), (r.status_code, r.json())


@pytest.mark.parametrize("name", MODELS)
def test_example_answers_match_torchserve(every_model_server, kserve, examples_dir, name):
    """The model's real example, in its own Content-Type, gets TorchServe's answer."""
    body, ctype = example(examples_dir, name)
    (ts_status, ts_answer), (ks_status, ks_answer) = both(
        every_model_server, kserve, name, body, ctype
    )
    assert ts_status == ks_status == 200, (ts_answer, ks_answer)
    close(ts_answer, ks_answer)


def test_form_upload_matches_torchserve(every_model_server, kserve, examples_dir):
    """A multipart upload with a form field (curl -F data=@photo -F topk=2): TorchServe's answer."""
    photo, _ = example(examples_dir, "flowers_cnn")
    form = requests.Request(
        "POST",
        kserve["url"],
        files={"data": ("photo.jpg", photo, "image/jpeg")},
        data={"topk": "2"},
    ).prepare()
    (ts_status, ts_answer), (ks_status, ks_answer) = both(
        every_model_server, kserve, "flowers_cnn", form.body, form.headers["Content-Type"]
    )
    assert ts_status == ks_status == 200, (ts_answer, ks_answer)
    assert len(ks_answer["top_k"]) == 2
    close(ts_answer, ks_answer)


def native_requests(examples_dir: Path, name: str) -> list[dict[str, Any]]:
    """Two JSON requests for `name` from its real example (the second one different)."""
    body, ctype = example(examples_dir, name)
    if name == "imdb_bert_int8":
        return [{"text": body.decode()}, {"text": "A dull, overlong film."}]
    if name == "flowers_cnn":
        b64 = base64.b64encode(body).decode()
        return [{"b64": b64}, {"b64": b64, "topk": 2}]
    first = json.loads(body)
    if name == "qm9_et":
        return [first, {**first, "forces": True}]
    if name == "mutag_gcn":
        return [first, {k: v for k, v in first.items() if k != "edge_labels"}]
    return [first, {k: v for k, v in first.items() if k != "nodes"}]  # cora: every node


@pytest.mark.parametrize("name", MODELS)
def test_instances_match_torchserve(every_model_server, kserve, examples_dir, name):
    """`{"instances": [...]}` of two different requests: one answer each, TorchServe's."""
    body = json.dumps({"instances": native_requests(examples_dir, name)}).encode()
    (ts_status, ts_answer), (ks_status, ks_answer) = both(
        every_model_server, kserve, name, body, "application/json"
    )
    assert ts_status == ks_status == 200, (ts_answer, ks_answer)
    assert len(ks_answer["predictions"]) == 2
    close(ts_answer, ks_answer)


BAD = {
    "cora_gcn": {"x": [[1.0] * 3] * 2, "edge_index": [[0], [1]]},
    "mutag_gcn": {"atoms": ["C", "Xe"], "edge_index": [[0, 1], [1, 0]]},
    "qm9_et": {"z": [6, 1], "pos": [[0.0, 0.0, 0.0]]},
    "imdb_bert_int8": {"text": "   "},
    "flowers_cnn": {"b64": "bm90IGFuIGltYWdl"},  # "not an image"
}


@pytest.mark.parametrize("name", MODELS)
def test_bad_request_gets_the_same_error(every_model_server, kserve, name):
    """A request the handler refuses: the same 4xx and the same JSON error under both."""
    body = json.dumps(BAD[name]).encode()
    (ts_status, ts_answer), (ks_status, ks_answer) = both(
        every_model_server, kserve, name, body, "application/json"
    )
    assert 400 <= ts_status < 500
    assert (ks_status, ks_answer) == (ts_status, ts_answer)
    assert ks_answer["field"] and ks_answer["error"]


def test_concurrent_requests_are_batched_and_each_keeps_its_answer(kserve, examples_dir):
    """16 clients at once: some requests share a handle call (X-Batch-Size > 1, at most the
    model-config's batchSize), every good one gets its alone answer, the bad ones their 400."""
    name = "mutag_gcn"
    body, ctype = example(examples_dir, name)
    bad = json.dumps(BAD[name]).encode()
    url = f"{kserve['url']}/v1/models/{name}:predict"

    def post(data: bytes) -> requests.Response:
        return requests.post(url, data=data, headers={"Content-Type": ctype}, timeout=120)

    alone = post(body)
    assert alone.status_code == 200 and alone.headers["X-Batch-Size"] == "1"
    bodies = [bad if i % 8 == 3 else body for i in range(160)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, bodies))
    sizes = [int(r.headers["X-Batch-Size"]) for r in answers if r.status_code == 200]
    batch_size = yaml.safe_load((ROOT / "model_archives" / name / "model-config.yaml").read_text())[
        "batchSize"
    ]
    assert max(sizes) > 1 and max(sizes) <= batch_size, sizes
    for sent, got in zip(bodies, answers):
        if sent is bad:
            assert got.status_code == 400 and got.json()["field"], got.text
        else:
            assert got.status_code == 200
            close(alone.json(), got.json())


def feature_dim(store: Path, name: str) -> int:
    """The model's feature dimension, from the meta.json inside its .mar."""
    with zipfile.ZipFile(store / f"{name}.mar") as mar:
        return int(json.loads(mar.read("meta.json"))["feature_dim"])


def tensor(name: str, datatype: str, value: Any) -> dict[str, Any]:
    """A v2 input tensor in JSON: shape from the nested lists, data flattened row-major."""
    shape, data = [], value
    while isinstance(data, list):
        shape.append(len(data))
        data = data[0] if data else None
    flat = value
    for _ in shape[1:]:
        flat = [v for row in flat for v in row]
    return {"name": name, "datatype": datatype, "shape": shape, "data": flat}


def v2_request(store: Path, name: str, native: dict[str, Any]) -> dict[str, Any]:
    """The v2 tensors (named as in issue 14) that carry the same request as `native`."""
    if name == "cora_gcn":
        dim = feature_dim(store, name)
        x = [[0.0] * dim for _ in native["x_sparse"]]
        for row, hot in zip(x, native["x_sparse"]):
            for j in hot:
                row[j] = 1.0
        inputs = [tensor("x", "FP32", x), tensor("edge_index", "INT64", native["edge_index"])]
        inputs.append(tensor("nodes", "INT64", native["nodes"]))
    elif name == "mutag_gcn":
        inputs = [tensor("atoms", "BYTES", native["atoms"])]
        inputs.append(tensor("edge_index", "INT64", native["edge_index"]))
    elif name == "qm9_et":
        inputs = [tensor("z", "INT64", native["z"]), tensor("pos", "FP32", native["pos"])]
        inputs.append(tensor("forces", "BOOL", [True]))
    elif name == "imdb_bert_int8":
        inputs = [tensor("text", "BYTES", [native["text"]])]
    else:
        inputs = [tensor("image", "BYTES", [native["b64"]])]
    return {"inputs": inputs}


def v2_native(examples_dir: Path, name: str) -> dict[str, Any]:
    """The native request that the v2 tensors of `v2_request` carry."""
    from train.qm9.data import SYMBOLS

    first = native_requests(examples_dir, name)[0]
    if name == "mutag_gcn":
        return {k: v for k, v in first.items() if k != "edge_labels"}  # no v2 tensor for it
    if name == "qm9_et":
        z = first["z"] if "z" in first else [SYMBOLS[a] for a in first["atoms"]]
        return {"z": z, "pos": first["pos"], "forces": True}
    return first


def outputs(answer: dict[str, Any]) -> dict[str, list]:
    """A v2 answer's outputs by name (data flattened, as v2 sends them)."""
    return {o["name"]: o["data"] for o in answer["outputs"]}


def labels(answer: dict[str, Any]) -> list[str]:
    """The label order of a v2 answer's `probabilities` (its `parameters.labels`)."""
    (probs,) = [o for o in answer["outputs"] if o["name"] == "probabilities"]
    return probs["parameters"]["labels"].split(",")


@pytest.mark.parametrize("name", MODELS)
def test_v2_infer_matches_native(every_model_server, every_model_store, kserve, examples_dir, name):
    """v2 tensors in, named tensors out: the same numbers as TorchServe's native answer."""
    native = v2_native(examples_dir, name)
    status, want, _ = every_model_server.predict(name, native)
    assert status == 200, want
    r = requests.post(
        f"{kserve['url']}/v2/models/{name}/infer",
        json=v2_request(every_model_store, name, native),
        timeout=120,
    )
    assert r.status_code == 200, r.text
    got = outputs(r.json())
    if name == "cora_gcn":
        rows = want["predictions"]
        assert got["node"] == [row["node"] for row in rows]
        assert got["label"] == [row["label"] for row in rows]
        close([v for row in rows for v in row["probabilities"].values()], got["probabilities"])
    elif name == "qm9_et":
        close([want["energy"]], got["energy"])
        close([v for row in want["forces"] for v in row], got["forces"])
    elif name == "flowers_cnn":  # every class in label order; the native answer's top k
        assert got["label"] == [want["label"]]
        probs = dict(zip(labels(r.json()), got["probabilities"]))
        close([t["probability"] for t in want["top_k"]], [probs[t["label"]] for t in want["top_k"]])
    else:
        assert got["label"] == [want["label"]]
        close(list(want["probabilities"].values()), got["probabilities"])


def binary_inputs(request: dict[str, Any]) -> list[triton.InferInput]:
    """tritonclient's inputs for a JSON v2 request, every tensor in the binary extension (an
    image as the file's own bytes, not UTF-8, which only the handler's decoder takes)."""
    out = []
    for t in request["inputs"]:
        data = t["data"]
        if t["name"] == "image":
            data = [base64.b64decode(data[0])]
        dtype = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_}.get(t["datatype"], object)
        tensor = triton.InferInput(t["name"], t["shape"], t["datatype"])
        tensor.set_data_from_numpy(np.array(data, dtype=dtype).reshape(t["shape"]))
        out.append(tensor)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_binary_v2_matches_torchserve(
    every_model_server, every_model_store, kserve, examples_dir, name
):
    """The same binary-extension v2 request from tritonclient to TorchServe's and to KServe's
    `/v2/models/<m>/infer`: the same v2 answer (outputs, labels, id and version)."""
    inputs = binary_inputs(v2_request(every_model_store, name, v2_native(examples_dir, name)))
    auth = {"Authorization": f"Bearer {every_model_server.token()}"}
    ts_url = every_model_server.inference.removeprefix("http://")
    ts = triton.InferenceServerClient(ts_url, network_timeout=120).infer(name, inputs, headers=auth)
    ks_url = kserve["url"].removeprefix("http://")
    ks = triton.InferenceServerClient(ks_url, network_timeout=120).infer(name, inputs)
    close(ts.get_response(), ks.get_response())


def test_v2_bad_tensors_get_json_errors(kserve):
    """A wrong datatype, a tensor that lies about its shape, a bad value: 400 naming it."""
    url = f"{kserve['url']}/v2/models/mutag_gcn/infer"
    edges = tensor("edge_index", "INT64", [[0, 1], [1, 0]])
    cases = {
        "atoms": [tensor("atoms", "FP32", [1.0, 2.0]), edges],  # wrong datatype
        "edge_index": [
            tensor("atoms", "BYTES", ["C", "C"]),
            {**edges, "shape": [2, 5]},  # says 10 values, carries 4
        ],
    }
    for field, inputs in cases.items():
        r = requests.post(url, json={"inputs": inputs}, timeout=60)
        assert r.status_code == 400, r.text
        assert r.json()["field"] == field, r.text
    bad_atom = [tensor("atoms", "BYTES", ["C", "Xe"]), edges]
    r = requests.post(url, json={"inputs": bad_atom}, timeout=60)
    assert r.status_code == 400 and "Xe" in r.json()["error"], r.text
    # ... and the server still serves.
    r = requests.post(url, json={"inputs": [tensor("atoms", "BYTES", ["C", "N"]), edges]})
    assert r.status_code == 200, r.text


def test_health_and_readiness(kserve):
    """KServe's v2 health routes and each model's readiness, v2 and v1."""
    url = kserve["url"]
    assert requests.get(f"{url}/v2/health/live", timeout=10).json() == {"live": True}
    assert requests.get(f"{url}/v2/health/ready", timeout=10).json() == {"ready": True}
    for name in MODELS:
        r = requests.get(f"{url}/v2/models/{name}/ready", timeout=10)
        assert r.status_code == 200 and r.json()["ready"] is True, r.text
        assert requests.get(f"{url}/v1/models/{name}", timeout=10).json()["ready"] is True
    assert requests.get(f"{url}/v2/models/no_such_model/ready", timeout=10).status_code == 404


@pytest.mark.parametrize("name", MODELS)
def test_metadata_matches_the_torchserve_side(every_model_server, kserve, name):
    """KServe's GET /v2/models/<m> (the handler's oip_v2 declarations) names the tensors that
    the v2 metadata server beside TorchServe names (serve/v2_metadata.py)."""
    ks = requests.get(f"{kserve['url']}/v2/models/{name}", timeout=10)
    assert ks.status_code == 200, ks.text
    status, raw, _ = exchange(
        f"{every_model_server.v2}/v2/models/{name}", every_model_server.token()
    )
    ts = json.loads(raw)
    assert status == 200 and ks.json()["name"] == ts["name"] == name
    assert (ks.json()["inputs"], ks.json()["outputs"]) == (ts["inputs"], ts["outputs"])


GRPC_CLIENT = """
import json, sys, grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as rpc
stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel(sys.argv[1]))
ready = stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
req = json.loads(sys.stdin.read())
inputs = []
for t in req["inputs"]:
    contents = pb.InferTensorContents(**(
        {"bytes_contents": [s.encode() for s in t["data"]]} if t["datatype"] == "BYTES"
        else {"int64_contents": t["data"]}))
    inputs.append(pb.ModelInferRequest.InferInputTensor(
        name=t["name"], datatype=t["datatype"], shape=t["shape"], contents=contents))
out = stub.ModelInfer(pb.ModelInferRequest(model_name="mutag_gcn", inputs=inputs), timeout=60)
res = {o.name: (list(o.contents.bytes_contents) and [b.decode() for b in o.contents.bytes_contents])
       or list(o.contents.fp32_contents) for o in out.outputs}
print(json.dumps({"ready": ready, "outputs": res}))
"""


def test_grpc_v2_matches_rest(kserve, examples_dir):
    """KServe's own gRPC stubs (Open Inference Protocol v2): ServerReady and ModelInfer answer
    on the loopback gRPC port, with the numbers of the REST v2 route."""
    native = v2_native(examples_dir, "mutag_gcn")
    request = {
        "inputs": [
            tensor("atoms", "BYTES", native["atoms"]),
            tensor("edge_index", "INT64", native["edge_index"]),
        ]
    }
    rest = requests.post(
        f"{kserve['url']}/v2/models/mutag_gcn/infer", json=request, timeout=60
    ).json()
    run = subprocess.run(
        [str(kserve_python()), "-c", GRPC_CLIENT, kserve["grpc"]],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    assert got["ready"] is True
    assert got["outputs"]["label"] == outputs(rest)["label"]
    close(outputs(rest)["probabilities"], got["outputs"]["probabilities"])
