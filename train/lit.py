"""LightningModules: one per task shape. They wrap a plain nn.Module that is what gets exported."""

import copy
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BestWeights(L.Callback):
    """Keeps the weights of the best epoch by the monitored metric; restores them at fit end."""

    def __init__(self, monitor: str, mode: str = "max") -> None:
        self.monitor, self.sign = monitor, (1.0 if mode == "max" else -1.0)
        self.best: float | None = None
        self.state: dict[str, Tensor] | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        score = self.sign * float(value)
        if self.best is None or score > self.best:
            self.best = score
            self.state = copy.deepcopy(pl_module.state_dict())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)


class _Classifier(L.LightningModule):
    def __init__(self, net: nn.Module, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.net = net
        self.save_hyperparameters(ignore=["net"])

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )

    def _log_step(self, stage: str, logits: Tensor, y: Tensor, batch_size: int) -> Tensor:
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        on_step = stage == "train"
        self.log(
            f"{stage}_loss",
            loss,
            prog_bar=True,
            batch_size=batch_size,
            on_step=False,
            on_epoch=True,
        )
        self.log(
            f"{stage}_acc",
            acc,
            prog_bar=not on_step,
            batch_size=batch_size,
            on_step=False,
            on_epoch=True,
        )
        return loss

    def _step(self, batch: Any, stage: str) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")


class NodeClassifier(_Classifier):
    """Full-batch transductive node classification on one graph with train/val/test masks."""

    def _step(self, batch: Any, stage: str) -> Tensor:
        logits = self.net(batch.x, batch.edge_index)
        mask = batch[f"{stage}_mask"]
        return self._log_step(stage, logits[mask], batch.y[mask], int(mask.sum()))


class GraphClassifier(_Classifier):
    """Mini-batch graph classification over PyG Batches."""

    def _step(self, batch: Any, stage: str) -> Tensor:
        logits = self.net(batch.x, batch.edge_index, batch.batch)
        return self._log_step(stage, logits, batch.y, batch.num_graphs)
