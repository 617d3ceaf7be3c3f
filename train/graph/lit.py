"""The graph family's LightningModules: one per task shape, around the net that is exported."""

from typing import Any

from torch import Tensor

from train.core.trainer import Classifier


class NodeClassifier(Classifier):
    """Full-batch transductive node classification on one graph with train/val/test masks."""

    def _step(self, batch: Any, stage: str) -> Tensor:
        logits = self.net(batch.x, batch.edge_index)
        mask = batch[f"{stage}_mask"]
        return self._log_step(stage, logits[mask], batch.y[mask], int(mask.sum()))


class GraphClassifier(Classifier):
    """Mini-batch graph classification over PyG Batches."""

    def _step(self, batch: Any, stage: str) -> Tensor:
        logits = self.net(batch.x, batch.edge_index, batch.batch)
        return self._log_step(stage, logits, batch.y, batch.num_graphs)
