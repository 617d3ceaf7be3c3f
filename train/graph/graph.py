"""MUTAG graph classification: 10-fold CV for the estimate, then a final model on a fixed split."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch_geometric.loader import DataLoader

from train.core.export import export_torchscript
from train.core.handlers import graph_stats
from train.core.plots import plot_confusion
from train.core.reference import write_reference
from train.core.scores import scores
from train.core.trainer import BestWeights, finish_logger, make_trainer
from train.graph.data import load_tu
from train.graph.lit import GraphClassifier


def stratified_folds(y: Tensor, k: int, seed: int) -> list[Tensor]:
    """Splits indices into k folds with each class spread evenly; deterministic in seed."""
    gen = torch.Generator().manual_seed(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().view(-1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        for j, i in enumerate(idx.tolist()):
            folds[(offset + j) % k].append(i)
        offset += len(idx)
    return [torch.tensor(sorted(f)) for f in folds]


def _fit(
    cfg: DictConfig, dataset: Any, train_idx: Tensor, val_idx: Tensor
) -> tuple[GraphClassifier, float, L.Trainer]:
    """Fits on train_idx, picks the weights on val_idx and returns their validation accuracy;
    the trainer's W&B run is left open."""
    net = instantiate(cfg.model.net, in_dim=dataset.num_features, num_classes=dataset.num_classes)
    module = GraphClassifier(net, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    bs = cfg.data.batch_size
    train_loader = DataLoader(dataset[train_idx], batch_size=bs, shuffle=True)
    val_loader = DataLoader(dataset[val_idx], batch_size=bs)
    trainer = make_trainer(cfg, [BestWeights("val_loss", "min")])
    trainer.fit(module, train_loader, val_loader)
    val = trainer.validate(module, val_loader, verbose=False)[0]["val_acc"]
    return module, val, trainer


def _fit_eval(
    cfg: DictConfig, dataset: Any, train_idx: Tensor, val_idx: Tensor, test_idx: Tensor
) -> tuple[GraphClassifier, float, float, L.Trainer]:
    """_fit, then the chosen weights' accuracy on test_idx."""
    module, val, trainer = _fit(cfg, dataset, train_idx, val_idx)
    test_loader = DataLoader(dataset[test_idx], batch_size=cfg.data.batch_size)
    test = trainer.test(module, test_loader, verbose=False)[0]["test_acc"]
    return module, val, test, trainer


def validation_score(cfg: DictConfig, report: Callable[[int, float], None]) -> float:
    """A study's objective (train.tune): the mean validation accuracy of `cfg.data.tune_folds`
    fits, each validated on one stratified part of folds 1..k-1 and trained on the rest.

    Fold 0, the fixed split's test fold, is never read. `report(i, mean so far)` after each fit
    lets the study prune a trial that falls behind. `tune.repeat` (k > 0, train.tune's recheck)
    draws the parts and seeds the fits anew, with the same fold 0 left out.
    """
    L.seed_everything(cfg.seed, workers=True)
    dataset = load_tu(cfg.data.name, cfg.data.root, cfg.data.mirror)
    accs: list[float] = []
    repeat = int(cfg.get("tune", {}).get("repeat", 0))
    splits = tuning_splits(dataset.y, cfg.data.folds, cfg.data.tune_folds, cfg.seed, repeat)
    for i, (train_idx, val_idx) in enumerate(splits):
        L.seed_everything(cfg.seed + i + 100 * repeat, workers=True)
        _, val, trainer = _fit(cfg, dataset, train_idx, val_idx)
        finish_logger(trainer)
        accs.append(val)
        report(i, sum(accs) / len(accs))
    return sum(accs) / len(accs)


def tuning_splits(
    y: Tensor, k: int, parts: int, seed: int, repeat: int = 0
) -> list[tuple[Tensor, Tensor]]:
    """(train, validation) indices of a study's fits: folds 1..k-1 of `stratified_folds` cut
    into `parts` stratified parts (drawn anew for each `repeat`), each one validation in turn.
    Fold 0 is in none."""
    pool = torch.cat(stratified_folds(y, k, seed)[1:])
    cut = stratified_folds(y[pool], parts, seed + 1000 * repeat)
    return [
        (pool[torch.cat([p for j, p in enumerate(cut) if j != i])], pool[held])
        for i, held in enumerate(cut)
    ]


@torch.no_grad()
def predict(net: Any, dataset: Any, batch_size: int) -> Tensor:
    """The predicted class of each graph, in order."""
    net.eval()
    loader = DataLoader(dataset, batch_size=batch_size)
    return torch.cat([net(b.x, b.edge_index, b.batch).argmax(-1) for b in loader])


def run(cfg: DictConfig) -> dict[str, Any]:
    """Cross-validates, trains the final model on a fixed split, exports it; returns metrics."""
    L.seed_everything(cfg.seed, workers=True)
    dataset = load_tu(cfg.data.name, cfg.data.root, cfg.data.mirror)
    y = dataset.y

    k = cfg.data.folds
    folds = stratified_folds(y, k, cfg.seed)
    cv_acc: list[float] = []
    for i in range(cfg.data.cv_runs):
        # Fold i is the test fold, fold i+1 picks the weights (model selection), the rest train.
        test_idx, val_idx = folds[i], folds[(i + 1) % k]
        train_idx = torch.cat([f for j, f in enumerate(folds) if j not in (i, (i + 1) % k)])
        L.seed_everything(cfg.seed + i, workers=True)
        _, _, test_acc, trainer = _fit_eval(cfg, dataset, train_idx, val_idx, test_idx)
        finish_logger(trainer)
        cv_acc.append(test_acc)

    # Final model: the fixed split is fold 0 test, fold 1 val, the rest train. It is fitted last,
    # so its curves are the ones left in the artifact folder.
    train_idx = torch.cat(folds[2:])
    L.seed_everything(cfg.seed, workers=True)
    module, val_acc, test_acc, trainer = _fit_eval(cfg, dataset, train_idx, folds[1], folds[0])
    if not trainer.is_global_zero:  # trainer=ddp: rank zero scores, plots and exports
        return {"model": cfg.name, "global_rank": trainer.global_rank}
    labels = list(cfg.data.labels)
    test = scores(predict(module.net, dataset[folds[0]], cfg.data.batch_size), y[folds[0]], labels)
    confusion = Path(cfg.paths.artifacts) / "confusion.png"
    plot_confusion(test, labels, cfg.name, confusion)
    finish_logger(trainer, [confusion])

    cv = torch.tensor(cv_acc) if cv_acc else torch.zeros(0)
    metrics = {
        "model": cfg.name,
        "dataset": cfg.data.name,
        "cv_folds": len(cv_acc),
        "cv_acc_mean": round(float(cv.mean()), 4) if cv_acc else None,
        "cv_acc_std": round(float(cv.std()), 4) if len(cv_acc) > 1 else None,
        "cv_acc": [round(a, 4) for a in cv_acc],
        "val_acc": round(val_acc, 4),
        "test_acc": round(test_acc, 4),
        "seed": cfg.seed,
        "world_size": trainer.world_size,
    }
    meta = {
        "name": cfg.name,
        "task": "graph_classification",
        "feature_dim": dataset.num_features,
        "normalize": "none",
        "labels": list(cfg.data.labels),
        "atom_labels": list(cfg.data.atom_labels),
        "edge_labels": list(cfg.data.edge_labels),
        "uses_edge_labels": False,
        "inputs": ["x", "edge_index", "batch"],
        "model_cfg": OmegaConf.to_container(cfg.model.net, resolve=True),
    }
    example = dataset[folds[0][:4]]
    batch = next(iter(DataLoader(example, batch_size=4)))
    export_torchscript(
        module.net, (batch.x, batch.edge_index, batch.batch), cfg.paths.artifacts, meta, metrics
    )
    write_graph_reference(module.net, dataset[train_idx], cfg.paths.artifacts, meta)
    return metrics


@torch.no_grad()
def write_graph_reference(net: Any, graphs: Any, out_dir: str, meta: dict[str, Any]) -> None:
    """The drift reference: every training molecule (MUTAG has fewer than SAMPLES), with its
    pooled embedding and predicted label."""
    net.eval()
    emb, pred = [], []
    for b in DataLoader(graphs, batch_size=64):
        emb.append(net.embed(b.x, b.edge_index, b.batch))
        pred += net(b.x, b.edge_index, b.batch).argmax(-1).tolist()
    stats = [graph_stats(g.x, g.edge_index) for g in graphs]
    write_reference(out_dir, meta["name"], stats, torch.cat(emb), pred, meta["labels"])
