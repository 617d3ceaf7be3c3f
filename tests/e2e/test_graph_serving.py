"""The real torchserve serving Cora and MUTAG: fidelity, batching, bad input, metrics, auth."""

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.utils import k_hop_subgraph

from serve.client import http, token
from tests.conftest import mirror
from train.graph.data import load_planetoid, load_tu
from train.graph.requests import mutag_request, planetoid_request

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cora(data_root):
    raw = load_planetoid("Cora", data_root, mirror(), normalize=False)[0]
    norm = load_planetoid("Cora", data_root, mirror())[0]
    return raw, norm


@pytest.fixture(scope="module")
def mutag(data_root):
    return load_tu("MUTAG", data_root, mirror())


def scripted(server, name):
    return torch.jit.load(str(server.artifacts / name / "model.pt")).eval()


def expected_cora(model, norm, center):
    """The scripted model's own output on the same subgraph, built independently of the handler."""
    subset, edge_index, mapping, _ = k_hop_subgraph(
        center, 2, norm.edge_index, relabel_nodes=True, num_nodes=norm.num_nodes
    )
    with torch.no_grad():
        return torch.softmax(model(norm.x[subset], edge_index), -1)[mapping]


def probs(pred, labels):
    return torch.tensor([pred["probabilities"][k] for k in labels])


@pytest.mark.parametrize("name", ["cora_gcn", "cora_gat"])
def test_cora_predictions_equal_scripted_model(server, cora, name):
    raw, norm = cora
    model, labels = scripted(server, name), None
    centers = raw.test_mask.nonzero().view(-1)[:6].tolist()
    for i, center in enumerate(centers):
        request = planetoid_request(raw, center, sparse=(i % 2 == 0))
        status, body, _ = server.predict(name, request)
        assert status == 200, body
        labels = labels or list(body["predictions"][0]["probabilities"])
        expected = expected_cora(model, norm, center)[0]
        pred = body["predictions"][0]
        torch.testing.assert_close(probs(pred, labels), expected, atol=2e-6, rtol=0)
        assert pred["label"] == labels[int(expected.argmax())]


@pytest.mark.parametrize("as_atoms", [True, False], ids=["atoms", "one_hot"])
def test_mutag_predictions_equal_scripted_model(server, mutag, as_atoms):
    model = scripted(server, "mutag_gcn")
    for graph in mutag[:8]:
        status, body, _ = server.predict("mutag_gcn", mutag_request(graph, as_atoms))
        assert status == 200, body
        b = Batch.from_data_list([graph])
        with torch.no_grad():
            expected = torch.softmax(model(b.x, b.edge_index, b.batch), -1)[0]
        torch.testing.assert_close(
            probs(body, ["non-mutagenic", "mutagenic"]), expected, atol=2e-6, rtol=0
        )


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, mutag):
    model = scripted(server, "mutag_gcn")
    graphs = list(mutag[:32])
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda g: server.predict("mutag_gcn", mutag_request(g)), graphs))
    batch_sizes = []
    for graph, (status, body, headers) in zip(graphs, results):
        assert status == 200
        b = Batch.from_data_list([graph])
        with torch.no_grad():
            expected = torch.softmax(model(b.x, b.edge_index, b.batch), -1)[0]
        torch.testing.assert_close(
            probs(body, ["non-mutagenic", "mutagenic"]), expected, atol=2e-6, rtol=0
        )
        batch_sizes.append(int(headers.get("X-Batch-Size", headers.get("x-batch-size", 0))))
    assert max(batch_sizes) > 1, f"no request was batched: {batch_sizes}"


GOOD_MOL = {"atoms": ["C", "C", "O"], "edge_index": [[0, 1, 1, 2], [1, 0, 2, 1]]}
BAD_CASES = [
    ("cora_gcn", b"{not json", "application/json", 400, "body"),
    ("cora_gcn", json.dumps(GOOD_MOL).encode(), "text/plain", 400, "Content-Type"),
    ("cora_gcn", {"edge_index": [[0], [0]]}, "application/json", 400, "x"),
    ("cora_gcn", {"x_sparse": [[0], [1]]}, "application/json", 400, "edge_index"),
    ("cora_gcn", {"x": [[0.0] * 5], "edge_index": [[], []]}, "application/json", 400, "x"),
    (
        "cora_gcn",
        {"x": [[0.0] * 1433, [0.0] * 3], "edge_index": [[], []]},
        "application/json",
        400,
        "x",
    ),
    (
        "cora_gcn",
        b'{"x_sparse": [[0]], "x_values": [[NaN]], "edge_index": [[], []]}',
        "application/json",
        400,
        "x_values",
    ),
    (
        "cora_gcn",
        b'{"x": [[Infinity' + b", 0" * 1432 + b']], "edge_index": [[], []]}',
        "application/json",
        400,
        "x",
    ),
    (
        "cora_gcn",
        {"x_sparse": [[0]], "edge_index": [[0.5], [0]]},
        "application/json",
        400,
        "edge_index",
    ),
    (
        "cora_gcn",
        {"x_sparse": [[0]], "edge_index": [[-1], [0]]},
        "application/json",
        400,
        "edge_index",
    ),
    (
        "cora_gcn",
        {"x_sparse": [[0]], "edge_index": [[0], [5]]},
        "application/json",
        400,
        "edge_index",
    ),
    ("cora_gcn", {"x_sparse": [], "edge_index": [[], []]}, "application/json", 400, "x_sparse"),
    (
        "cora_gcn",
        {"x_sparse": [[0]] * 20001, "edge_index": [[], []]},
        "application/json",
        413,
        "x_sparse",
    ),
    (
        "mutag_gcn",
        {"atoms": ["C", "Zz"], "edge_index": [[0], [1]]},
        "application/json",
        400,
        "atoms",
    ),
    ("mutag_gcn", {"atoms": [], "edge_index": [[], []]}, "application/json", 400, "atoms"),
    ("mutag_gcn", {"atoms": ["C"] * 501, "edge_index": [[], []]}, "application/json", 413, "atoms"),
    (
        "mutag_gcn",
        {"atoms": ["C", "C"], "edge_index": [[0] * 2001, [1] * 2001]},
        "application/json",
        413,
        "edge_index",
    ),
]


@pytest.mark.parametrize(
    "name, body, ctype, code, field",
    BAD_CASES,
    ids=[f"{c[0]}-{c[4]}-{i}" for i, c in enumerate(BAD_CASES)],
)
def test_bad_input_gets_4xx_and_server_keeps_serving(server, name, body, ctype, code, field):
    status, err, _ = server.predict(name, body, ctype)
    assert status == code, err
    assert err["code"] == code and err["field"] == field, err
    assert field in err["error"]
    status, ok, _ = server.predict("mutag_gcn", GOOD_MOL)
    assert status == 200 and ok["label"] in ok["probabilities"]


def test_body_over_max_request_size_is_413_from_frontend(server):
    """The frontend answers 413 from the Content-Length alone, before reading the body."""
    host, port = server.inference.removeprefix("http://").split(":")
    size = 10 * 1024 * 1024 + 1
    head = (
        f"POST /predictions/cora_gcn HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token('inference', server.key_file)}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + b" " * 65536)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.split()[1] == b"413", status_line
    assert server.predict("mutag_gcn", GOOD_MOL)[0] == 200


def test_tokens_guard_every_api(server):
    assert http(f"{server.inference}/ping")[0] in (400, 401)
    assert http(f"{server.inference}/ping", token("inference", server.key_file))[0] == 200
    assert http(f"{server.management}/models")[0] in (400, 401)
    assert http(f"{server.management}/models", token("inference", server.key_file))[0] in (400, 401)
    status, body = http(f"{server.management}/models", token("management", server.key_file))
    assert status == 200
    assert sorted(m["modelName"] for m in json.loads(body)["models"]) == [
        "cora_gat",
        "cora_gcn",
        "mutag_gcn",
    ]
    assert server.predict("mutag_gcn", GOOD_MOL, tok="wrong")[0] in (400, 401)


def test_metrics_endpoint_reports_per_model_counters(server):
    server.predict("cora_gat", {"x_sparse": [[1]], "edge_index": [[], []]})
    status, body = http(f"{server.metrics}/metrics")
    assert status == 200
    text = body.decode()
    for name in ("cora_gcn", "cora_gat", "mutag_gcn"):
        assert f'ts_inference_requests_total{{model_name="{name}"' in text or (
            f'model_name="{name}"' in text and "ts_inference_requests_total" in text
        )
    assert "ts_queue_latency_microseconds" in text
