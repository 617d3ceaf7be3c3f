"""The IMDb LightningModule: AdamW with warm-up around the SequenceClassifier that is exported."""

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SentimentClassifier(L.LightningModule):
    """Fine-tunes a SequenceClassifier with AdamW and a linear warm-up/decay schedule."""

    def __init__(self, net: nn.Module, lr: float, weight_decay: float, warmup_ratio: float) -> None:
        super().__init__()
        self.net = net
        self.save_hyperparameters(ignore=["net"])

    def configure_optimizers(self) -> Any:
        # As in HF run_glue: no weight decay on biases and LayerNorm weights.
        decay, no_decay = [], []
        for p in self.net.parameters():
            if p.requires_grad:
                (no_decay if p.ndim == 1 else decay).append(p)
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.hparams.warmup_ratio * total)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _step(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> Tensor:
        ids, mask, y = batch
        logits = self.net(ids, mask)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=len(y))
        self.log(f"{stage}_acc", acc, prog_bar=True, batch_size=len(y))
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")
