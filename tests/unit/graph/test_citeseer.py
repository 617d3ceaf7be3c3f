"""citeseer_gcn: CiteSeer data and config, a tiny real run, its example served in-process."""

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import get_method
from node_classifier import NodeClassifierHandler
from torch_geometric.utils import k_hop_subgraph

from tests.conftest import mirror, tiny_cfg
from tests.unit.conftest import call, make_context
from train.core.registry import served_models, spec
from train.graph.data import load_planetoid

needs_mirror = pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    """citeseer_gcn's own config with its archive.yaml's tiny-run overrides."""
    return tiny_cfg(
        "citeseer_gcn", tmp_path_factory.mktemp("artifacts"), *spec("citeseer_gcn").tiny
    )


def test_citeseer_gcn_is_registered_with_the_kipf_welling_setup(cfg):
    assert "citeseer_gcn" in served_models()
    s = spec("citeseer_gcn")
    assert s.experiment == "citeseer_gcn" and s.handler == "handlers/node_classifier.py"
    assert callable(get_method(s.example)) and callable(get_method(s.pool))
    assert cfg.data.name == "CiteSeer" and cfg.runner == "train.graph.node.run"
    assert (cfg.model.net.hidden_dim, cfg.model.net.dropout) == (16, 0.5)
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (0.01, 5.0e-4)
    assert len(cfg.data.labels) == len(set(cfg.data.labels)) == 6


@needs_mirror
def test_citeseer_public_split_and_label_names(cfg):
    data = load_planetoid(cfg.data.name, cfg.data.root, cfg.data.mirror)[0]
    assert (data.num_nodes, data.num_features) == (3327, 3703)
    masks = (data.train_mask, data.val_mask, data.test_mask)
    assert [int(m.sum()) for m in masks] == [120, 500, 1000]
    assert torch.bincount(data.y[data.train_mask]).tolist() == [20] * 6  # 20 labelled per class
    assert torch.bincount(data.y).tolist() == list(cfg.data.class_counts)
    # Normalised rows sum to 1, except the 15 isolated papers Planetoid adds without features.
    sums = data.x.sum(-1)
    empty = sums == 0
    assert int(empty.sum()) == 15
    torch.testing.assert_close(sums[~empty], torch.ones(int((~empty).sum())))


@needs_mirror
def test_tiny_run_exports_and_the_example_is_served_as_the_model_answers(cfg):
    metrics = get_method(cfg.runner)(cfg)
    assert metrics["model"] == "citeseer_gcn" and 0.0 <= metrics["test_acc"] <= 1.0
    art = Path(cfg.paths.artifacts)
    meta = json.loads((art / "meta.json").read_text())
    assert meta["feature_dim"] == 3703 and meta["labels"] == list(cfg.data.labels)

    suffix, ctype, body = get_method(spec("citeseer_gcn").example)(cfg.data)
    assert (suffix, ctype) == (".json", "application/json")
    request = json.loads(body)
    handler = NodeClassifierHandler()
    ctx = make_context(art, "citeseer_gcn", {"max_nodes": 20000, "max_edges": 200000})
    handler.initialize(ctx)
    [(status, answer)] = call(handler, ctx, [request])
    assert status == 200, answer

    # The scripted model's own output on the same 2-hop neighbourhood, from training's features.
    data = load_planetoid(cfg.data.name, cfg.data.root, cfg.data.mirror)[0]
    center = int(data.test_mask.nonzero()[0])
    subset, edge_index, mapping, _ = k_hop_subgraph(
        center, 2, data.edge_index, relabel_nodes=True, num_nodes=data.num_nodes
    )
    assert request["nodes"] == [int(mapping[0])] and len(request["x_sparse"]) == len(subset)
    with torch.no_grad():
        probs = torch.softmax(handler.model(data.x[subset], edge_index), -1)[mapping[0]]
    [pred] = answer["predictions"]
    assert pred["label"] == cfg.data.labels[int(probs.argmax())]
    served = [pred["probabilities"][name] for name in cfg.data.labels]
    assert served == pytest.approx(probs.tolist(), abs=1e-5)
