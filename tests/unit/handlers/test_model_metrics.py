"""Model metrics in-process: what each batch adds to TorchServe's metrics, read off the worker's
metric lines (the frontend's own pattern), and that metrics never fail a request."""

import logging
from collections import Counter

import pytest
import torch
from graph_classifier import GraphClassifierHandler
from model_metrics import (
    EDGES,
    ERRORS,
    INPUTS,
    NODES,
    PREDICTIONS,
    TOP1,
    error_field,
    spread,
)
from node_classifier import NodeClassifierHandler
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from tests.unit.conftest import METRICS_YAML, call, make_context, make_model_dir
from train.graph.models import GCN, GraphGCN

ATOMS = ["C", "N", "O", "F", "I", "Cl", "Br"]
GRAPH_META = {
    "feature_dim": 7,
    "normalize": "none",
    "labels": ["neg", "pos"],
    "atom_labels": ATOMS,
    "edge_labels": ["aromatic", "single", "double", "triple"],
}


def graph(n: int) -> dict:
    """A chain of n carbons, each bond in both directions."""
    src = [i for i in range(n - 1)] + [i + 1 for i in range(n - 1)]
    dst = [i + 1 for i in range(n - 1)] + [i for i in range(n - 1)]
    return {"atoms": ["C"] * n, "edge_index": [src, dst]}


@pytest.fixture
def mutag(tmp_path):
    torch.manual_seed(0)
    model_dir = make_model_dir(tmp_path / "mutag", GraphGCN(7, 8, 2, 2, 0.1), GRAPH_META)
    handler = GraphClassifierHandler()
    ctx = make_context(model_dir, "mutag_gcn", {"max_nodes": 6, "max_edges": 12}, "3.0")
    handler.initialize(ctx)
    return handler, ctx


def totals(lines, name):
    """{dimensions except the model's: summed value} of one metric."""
    out: Counter = Counter()
    for metric, _, value, dims in lines:
        if metric == name:
            assert dims["ModelName"] == "mutag_gcn" and dims["ModelVersion"] == "3.0"
            out[tuple(v for k, v in dims.items() if k not in ("ModelName", "ModelVersion"))] += (
                value
            )
    return out


def test_a_batch_adds_its_inputs_labels_probabilities_and_errors(mutag, metric_lines):
    handler, ctx = mutag
    metric_lines()
    bad_atom = {**graph(2), "atoms": ["C", "Xe"]}
    too_big = graph(7)  # 7 nodes > max_nodes 6: 413
    bodies = [graph(3), bad_atom, graph(5), too_big, {"instances": [graph(2), {"edge_index": []}]}]
    out = call(handler, ctx, bodies)
    lines = metric_lines()
    answers = [body for status, body in out if status == 200]
    assert [status for status, _ in out] == [200, 400, 200, 413, 400]
    assert totals(lines, INPUTS) == {(): 2}
    assert totals(lines, NODES) == {(): 3 + 5} and totals(lines, EDGES) == {(): 4 + 8}
    assert totals(lines, PREDICTIONS) == Counter((a["label"],) for a in answers)
    top1 = sorted(v for m, kind, v, _ in lines if m == TOP1)
    assert [kind for m, kind, _, _ in lines if m == TOP1] == ["HISTOGRAM"] * 2
    assert top1 == pytest.approx(sorted(a["probabilities"][a["label"]] for a in answers))
    # The instance's error names its field without the instance's index.
    assert totals(lines, ERRORS) == {
        ("atoms", "400"): 1,
        ("atoms", "413"): 1,
        ("edge_index", "400"): 1,
    }


def test_node_answers_are_counted_per_returned_node(tmp_path, metric_lines):
    torch.manual_seed(0)
    meta = {"feature_dim": 5, "normalize": "row_sum", "labels": ["a", "b", "c"]}
    handler = NodeClassifierHandler()
    ctx = make_context(make_model_dir(tmp_path / "cora", GCN(5, 4, 3, 0.5), meta), "cora_gcn")
    handler.initialize(ctx)
    metric_lines()
    x = [[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 2, 0, 0]]
    body = {"x": x, "edge_index": [[0, 1, 1, 2], [1, 0, 2, 1]], "nodes": [0, 2]}
    [(status, answer)] = call(handler, ctx, [body])
    lines = metric_lines()
    assert status == 200
    labels = Counter(p["label"] for p in answer["predictions"])
    got = Counter({d["Label"]: v for m, _, v, d in lines if m == PREDICTIONS})
    assert got == labels and sum(got.values()) == 2
    assert [v for m, _, v, _ in lines if m == NODES] == [3]


def test_error_fields_are_bounded_to_the_contract():
    assert error_field("instances[12].edge_index") == "edge_index"
    assert error_field("x_sparse") == "x_sparse"
    assert error_field("Content-Type") == "Content-Type"
    # A client's own key (duplicate keys name it) must not become a series of its own.
    assert error_field("my,own:key") == "other"
    assert error_field("zzz") == "other"


def test_histogram_observations_are_capped_and_spread():
    assert spread(list(range(5)), 16) == [0, 1, 2, 3, 4]
    assert spread(list(range(100)), 4) == [0, 25, 50, 75]


def test_switched_off_by_the_environment(tmp_path, monkeypatch, metric_lines):
    monkeypatch.setenv("BUNDLE_MODEL_METRICS", "0")
    model_dir = make_model_dir(tmp_path / "mutag", GraphGCN(7, 8, 2, 2, 0.1), GRAPH_META)
    handler = GraphClassifierHandler()
    ctx = make_context(model_dir, "mutag_gcn")
    handler.initialize(ctx)
    metric_lines()
    [(status, _)] = call(handler, ctx, [graph(3)])
    assert status == 200
    assert [m for m, *_ in metric_lines() if m.startswith("bundle_")] == []


def test_metrics_that_fail_never_fail_the_answers(tmp_path, caplog):
    """A cache without the declarations (get_metric raises), and an observe that raises."""
    model_dir = make_model_dir(tmp_path / "mutag", GraphGCN(7, 8, 2, 2, 0.1), GRAPH_META)
    handler = GraphClassifierHandler()
    ctx = make_context(model_dir, "mutag_gcn")
    ctx.metrics = MetricsCacheYamlImpl(METRICS_YAML)  # not initialize_cache()'d: nothing declared
    handler.initialize(ctx)
    with caplog.at_level(logging.WARNING, logger="model_metrics"):
        assert [s for s, _ in call(handler, ctx, [graph(3), graph(2)])] == [200, 200]
    assert "is not declared in metrics.yaml" in caplog.text

    def broken(items, outputs):
        raise KeyError("label")

    handler.observe = broken
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="model_metrics"):
        out = call(handler, ctx, [graph(3)])
    assert out[0][0] == 200 and "label" in out[0][1]
    assert "model metrics not recorded" in caplog.text
