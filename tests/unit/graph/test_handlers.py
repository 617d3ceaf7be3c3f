"""Graph handlers in-process: contract, batching, and every bad-input case."""

import math

import pytest
import torch
from graph_classifier import GraphClassifierHandler
from node_classifier import NodeClassifierHandler
from torch_geometric.data import Batch, Data

from tests.unit.conftest import JSON, call, make_context, make_model_dir
from train.graph.models import GCN, GraphGCN

LABELS = ["a", "b", "c"]
ATOMS = ["C", "N", "O", "F", "I", "Cl", "Br"]
BONDS = ["aromatic", "single", "double", "triple"]
GOOD_NODE = {
    "x": [[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 2, 0, 0]],
    "edge_index": [[0, 1, 1, 2], [1, 0, 2, 1]],
}
GOOD_MOL = {
    "atoms": ["C", "C", "O"],
    "edge_index": [[0, 1, 1, 2], [1, 0, 2, 1]],
    "edge_labels": ["single", "single", "double", "double"],
}


@pytest.fixture
def node_handler(tmp_path):
    torch.manual_seed(0)
    meta = {"feature_dim": 5, "normalize": "row_sum", "labels": LABELS}
    model_dir = make_model_dir(tmp_path / "cora", GCN(5, 4, 3, 0.5), meta)
    handler = NodeClassifierHandler()
    ctx = make_context(model_dir, "cora_gcn", {"max_nodes": 10, "max_edges": 20})
    handler.initialize(ctx)
    return handler, ctx


@pytest.fixture
def graph_handler(tmp_path):
    torch.manual_seed(0)
    meta = {
        "feature_dim": 7,
        "normalize": "none",
        "labels": ["neg", "pos"],
        "atom_labels": ATOMS,
        "edge_labels": BONDS,
    }
    model_dir = make_model_dir(tmp_path / "mutag", GraphGCN(7, 8, 2, 2, 0.1), meta)
    handler = GraphClassifierHandler()
    ctx = make_context(model_dir, "mutag_gcn", {"max_nodes": 6, "max_edges": 12})
    handler.initialize(ctx)
    return handler, ctx


def test_node_prediction_matches_model_on_normalised_features(node_handler):
    handler, ctx = node_handler
    [(status, body)] = call(handler, ctx, [GOOD_NODE])
    assert status == 200
    x = torch.tensor(GOOD_NODE["x"], dtype=torch.float)
    x = x / x.sum(-1, keepdim=True)
    expected = torch.softmax(handler.model(x, torch.tensor(GOOD_NODE["edge_index"])), -1)
    preds = body["predictions"]
    assert [p["node"] for p in preds] == [0, 1, 2]
    for p, e in zip(preds, expected):
        assert p["label"] == LABELS[int(e.argmax())]
        assert [p["probabilities"][k] for k in LABELS] == pytest.approx(e.tolist(), abs=1e-6)


def test_sparse_features_equal_dense(node_handler, as_bytes):
    handler, ctx = node_handler
    sparse = {
        "x_sparse": [[0, 3], [1], [2]],
        "x_values": [[1, 1], [1], [2]],
        "edge_index": GOOD_NODE["edge_index"],
        "nodes": [2, 0],
    }
    (_, dense), (_, sp) = call(handler, ctx, [GOOD_NODE, as_bytes(sparse)])
    assert [p["node"] for p in sp["predictions"]] == [2, 0]
    assert sp["predictions"][0] == dense["predictions"][2]
    assert sp["predictions"][1] == dense["predictions"][0]


def test_batch_answers_equal_single_answers(node_handler):
    handler, ctx = node_handler
    other = {"x_sparse": [[4], [0, 1]], "edge_index": [[0], [1]]}
    singles = [call(handler, ctx, [r])[0] for r in (GOOD_NODE, other)]
    assert call(handler, ctx, [GOOD_NODE, other]) == singles


NODE_BAD = [
    ("not json{", 400, "body"),
    ([1, 2], 400, "body"),
    ({"edge_index": [[0], [0]]}, 400, "x"),
    ({"x": [[1, 0, 0, 0, 0]]}, 400, "edge_index"),
    ({"x": [[1, 0, 0, 0]], "edge_index": [[], []]}, 400, "x"),  # wrong feature dimension
    ({"x": [[1, 0, 0, 0, 0], [1, 0]], "edge_index": [[], []]}, 400, "x"),  # ragged
    ({"x": [[1, 0, 0, 0, math.nan]], "edge_index": [[], []]}, 400, "x"),
    ({"x": [[1, 0, 0, 0, math.inf]], "edge_index": [[], []]}, 400, "x"),
    ({"x": [[1, 0, 0, 0, "a"]], "edge_index": [[], []]}, 400, "x"),
    ({"x": [[1, 0, 0, 0, 0]], "edge_index": [[0.5], [0]]}, 400, "edge_index"),
    ({"x": [[1, 0, 0, 0, 0]], "edge_index": [[-1], [0]]}, 400, "edge_index"),
    ({"x": [[1, 0, 0, 0, 0]], "edge_index": [[0], [1]]}, 400, "edge_index"),  # out of range
    ({"x": [[1, 0, 0, 0, 0]], "edge_index": [[0, 0], [0]]}, 400, "edge_index"),
    ({"x": [], "edge_index": [[], []]}, 400, "x"),  # empty graph
    ({"x": [[1, 0, 0, 0, 0]] * 11, "edge_index": [[], []]}, 413, "x"),
    ({"x": [[1, 0, 0, 0, 0]], "edge_index": [[0] * 21, [0] * 21]}, 413, "edge_index"),
    ({"x_sparse": [[7]], "edge_index": [[], []]}, 400, "x_sparse"),
    ({"x_sparse": [[0]], "x_values": [[math.nan]], "edge_index": [[], []]}, 400, "x_values"),
    ({"x": [[1, 0, 0, 0, 0]], "edge_index": [[], []], "nodes": [3]}, 400, "nodes"),
]


@pytest.mark.parametrize("body, code, field", NODE_BAD, ids=[str(i) for i in range(len(NODE_BAD))])
def test_node_bad_input_fails_alone_in_its_batch(node_handler, as_bytes, body, code, field):
    handler, ctx = node_handler
    raw = body.encode() if isinstance(body, str) else as_bytes(body)
    results = call(handler, ctx, [GOOD_NODE, raw, GOOD_NODE])
    assert results[1][0] == code
    assert results[1][1]["field"] == field and results[1][1]["code"] == code
    assert results[1][1]["error"].startswith(field)
    assert results[0] == results[2] and results[0][0] == 200


def test_wrong_content_type_is_rejected(node_handler, as_bytes):
    handler, ctx = node_handler
    results = call(
        handler, ctx, [as_bytes(GOOD_NODE)] * 2, headers=[{"Content-Type": "text/plain"}, JSON]
    )
    assert results[0][0] == 400 and results[0][1]["field"] == "Content-Type"
    assert results[1][0] == 200


def test_all_bad_batch_runs_no_model(node_handler):
    handler, ctx = node_handler
    results = call(handler, ctx, [b"", b"{}"])
    assert [r[0] for r in results] == [400, 400]


def test_molecule_from_atoms_equals_one_hot(graph_handler):
    handler, ctx = graph_handler
    one_hot = {
        "x": [[1, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0]],
        "edge_index": GOOD_MOL["edge_index"],
    }
    (s1, a), (s2, b) = call(handler, ctx, [GOOD_MOL, one_hot])
    assert s1 == s2 == 200 and a == b
    assert set(a["probabilities"]) == {"neg", "pos"}
    x = torch.tensor(one_hot["x"], dtype=torch.float)
    batch = Batch.from_data_list([Data(x=x, edge_index=torch.tensor(one_hot["edge_index"]))])
    expected = torch.softmax(handler.model(batch.x, batch.edge_index, batch.batch), -1)[0]
    assert [a["probabilities"]["neg"], a["probabilities"]["pos"]] == pytest.approx(
        expected.tolist(), abs=1e-6
    )


GRAPH_BAD = [
    ({"atoms": ["C", "Xx"], "edge_index": [[0], [1]]}, 400, "atoms"),
    ({"atoms": [], "edge_index": [[], []]}, 400, "atoms"),
    ({"atoms": ["C"] * 7, "edge_index": [[], []]}, 413, "atoms"),
    ({"x": [[1, 0, 0, 0, 0, 0, 1]], "edge_index": [[], []]}, 400, "x"),  # not one-hot
    ({"atoms": ["C", "C"], "edge_index": [[0], [2]]}, 400, "edge_index"),
    (
        {"atoms": ["C", "C"], "edge_index": [[0], [1]], "edge_labels": ["quadruple"]},
        400,
        "edge_labels",
    ),
    ({"atoms": ["C", "C"], "edge_index": [[0], [1]], "edge_labels": [0, 1]}, 400, "edge_labels"),
    ({"edge_index": [[0], [1]]}, 400, "x"),
]


@pytest.mark.parametrize(
    "body, code, field", GRAPH_BAD, ids=[str(i) for i in range(len(GRAPH_BAD))]
)
def test_graph_bad_input_fails_alone_in_its_batch(graph_handler, body, code, field):
    handler, ctx = graph_handler
    results = call(handler, ctx, [GOOD_MOL, body, GOOD_MOL])
    assert (results[1][0], results[1][1]["field"]) == (code, field)
    assert results[0] == results[2] and results[0][0] == 200


def test_vertex_instances_envelope_answers_predictions_in_order(graph_handler):
    handler, ctx = graph_handler
    other = {"atoms": ["N", "O"], "edge_index": [[0, 1], [1, 0]]}
    singles = [call(handler, ctx, [m])[0][1] for m in (GOOD_MOL, other)]
    [(status, body)] = call(handler, ctx, [{"instances": [GOOD_MOL, other, GOOD_MOL]}])
    assert status == 200
    assert body == {"predictions": [singles[0], singles[1], singles[0]]}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"instances": []}, "instances"),
        ({"instances": [GOOD_MOL, {"atoms": ["Q"], "edge_index": [[], []]}]}, "instances[1].atoms"),
        ({"instances": [1]}, "instances[0]"),
    ],
)
def test_bad_instance_fails_its_request_only(graph_handler, body, field):
    handler, ctx = graph_handler
    results = call(handler, ctx, [{"instances": [GOOD_MOL]}, body, GOOD_MOL])
    assert results[1][0] == 400 and results[1][1]["field"] == field
    assert results[0][0] == results[2][0] == 200
    assert results[0][1]["predictions"][0] == results[2][1]


def test_disjoint_union_equals_pyg_batch():
    from graph_request import Graph, disjoint_union

    graphs = [
        Graph(torch.randn(3, 4), torch.tensor([[0, 1, 2], [1, 2, 0]])),
        Graph(torch.randn(1, 4), torch.empty(2, 0, dtype=torch.long)),
        Graph(torch.randn(2, 4), torch.tensor([[0, 1], [1, 0]])),
    ]
    ours = disjoint_union(graphs)
    pyg = Batch.from_data_list([Data(x=g.x, edge_index=g.edge_index) for g in graphs])
    for a, b in zip(ours, (pyg.x, pyg.edge_index, pyg.batch)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("threads", [1, None])
def test_torch_threads_from_model_config(tmp_path, threads):
    """handler.torch_threads sets the worker's intra-op threads; None leaves torch's default."""
    meta = {"feature_dim": 5, "normalize": "row_sum", "labels": LABELS}
    model_dir = make_model_dir(tmp_path / "cora", GCN(5, 4, 3, 0.5), meta)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        handler = NodeClassifierHandler()
        handler.initialize(make_context(model_dir, "cora_gcn", {"torch_threads": threads}))
        assert torch.get_num_threads() == (threads or 2)
        assert handler.config["torch_threads"] == threads
    finally:
        torch.set_num_threads(before)
