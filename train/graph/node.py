"""Cora node classification: config -> data -> model -> fit -> evaluate -> export."""

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.utils import k_hop_subgraph

from train.core.export import export_torchscript
from train.core.handlers import graph_stats
from train.core.plots import plot_confusion
from train.core.reference import sample, write_reference
from train.core.scores import scores
from train.core.trainer import BestWeights, finish_logger, make_trainer
from train.graph.data import load_planetoid
from train.graph.lit import NodeClassifier


def run(cfg: DictConfig) -> dict[str, Any]:
    """Trains, tests and exports a node classifier; returns the test metrics."""
    L.seed_everything(cfg.seed, workers=True)
    dataset = load_planetoid(cfg.data.name, cfg.data.root, cfg.data.mirror)
    data = dataset[0]
    loader = DataLoader([data], batch_size=1)

    net = instantiate(cfg.model.net, in_dim=dataset.num_features, num_classes=dataset.num_classes)
    module = NodeClassifier(net, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    trainer = make_trainer(cfg, [BestWeights("val_acc", "max")])
    trainer.fit(module, loader, loader)
    val = trainer.validate(module, loader, verbose=False)[0]
    test = trainer.test(module, loader, verbose=False)[0]
    net.eval()
    with torch.no_grad():
        pred = net(data.x, data.edge_index).argmax(-1)
    mask = data.test_mask
    confusion = Path(cfg.paths.artifacts) / "confusion.png"
    labels = list(cfg.data.labels)
    plot_confusion(scores(pred[mask], data.y[mask], labels), labels, cfg.name, confusion)
    finish_logger(trainer, [confusion])

    metrics = {
        "model": cfg.name,
        "dataset": cfg.data.name,
        "val_acc": round(val["val_acc"], 4),
        "test_acc": round(test["test_acc"], 4),
        "epochs": cfg.trainer.max_epochs,
        "seed": cfg.seed,
    }
    meta = {
        "name": cfg.name,
        "task": "node_classification",
        "feature_dim": dataset.num_features,
        "normalize": "row_sum",  # NormalizeFeatures: each row divided by its sum
        "labels": list(cfg.data.labels),
        "inputs": ["x", "edge_index"],
        "model_cfg": OmegaConf.to_container(cfg.model.net, resolve=True),
    }
    export_torchscript(net, (data.x, data.edge_index), cfg.paths.artifacts, meta, metrics)
    write_node_reference(net, data, cfg.paths.artifacts, cfg.name, meta["labels"], cfg.seed)
    return metrics


@torch.no_grad()
def write_node_reference(
    net: nn.Module, data: Data, out_dir: str, name: str, labels: list[str], seed: int
) -> None:
    """The drift reference: sampled nodes, each as the request the example sends (its 2-hop
    neighbourhood, returning that node), with the node's embedding and predicted label.

    A 2-layer net's output at a node depends on its 2-hop neighbourhood alone, so the full
    graph's embedding of the node is the one its request gets served.
    """
    net.eval()
    emb = net.embed(data.x, data.edge_index)  # (N, H)
    pred = net(data.x, data.edge_index).argmax(-1)
    nodes = sample(data.num_nodes, seed)
    stats = []
    for c in nodes:
        subset, edge_index, _, _ = k_hop_subgraph(
            c, 2, data.edge_index, relabel_nodes=True, num_nodes=data.num_nodes
        )
        stats.append(graph_stats(data.x[subset], edge_index))
    idx = torch.tensor(nodes)
    write_reference(out_dir, name, stats, emb[idx], [[int(p)] for p in pred[idx]], labels)
