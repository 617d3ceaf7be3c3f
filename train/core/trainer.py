"""What every training run shares: the Trainer from the config, its logger, best-epoch weights,
the training curves, and the Lightning classifier base the families subclass."""

import copy
import csv
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

log = logging.getLogger(__name__)


def make_trainer(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """Builds the Lightning Trainer from cfg.trainer with the configured logger; every fit
    writes its curves beside the run's metrics.json (Curves)."""
    logger: Any = False
    if cfg.get("logger") and cfg.logger.get("_target_"):
        Path(cfg.logger.save_dir).mkdir(parents=True, exist_ok=True)
        logger = instantiate(cfg.logger)
        if hasattr(logger, "log_hyperparams"):
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(settings, dict)
    settings["precision"] = cpu_precision(settings.get("precision"), settings.get("accelerator"))
    extra: list[L.Callback] = []
    if cfg.get("profile"):  # train.profile_train: a trace of a few steps, then the fit stops
        from train.core.stepprofile import StepProfiler

        extra.append(StepProfiler(name=cfg.name, **cfg.profile))
    return L.Trainer(
        **settings,
        logger=logger,
        callbacks=[*callbacks, *extra, Curves(Path(cfg.paths.artifacts), cfg.name)],
        enable_checkpointing=False,
    )


def bf16_units() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX), as oneDNN sees it."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_precision(precision: Any, accelerator: Any = "auto") -> Any:
    """`precision`, except bf16-mixed on a CPU without bfloat16 units, which becomes 32-true:
    there oneDNN emulates bfloat16 and autocast slows training down instead (the flowers CNN
    took about 4 min per epoch on a 2-core AVX2-only EPYC, against about 30 s with bf16 units).
    The flowers runs write the precision used in metrics.json."""
    on_cpu = accelerator == "cpu" or (
        accelerator in (None, "auto") and not torch.cuda.is_available()
    )
    if str(precision).startswith("bf16") and on_cpu and not bf16_units():
        log.warning("this CPU has no bfloat16 units: trainer.precision %s -> 32-true", precision)
        return "32-true"
    return precision


def log_images(trainer: L.Trainer, paths: Iterable[Path]) -> None:
    """The run's PNGs as media of its W&B run (each under its file's stem), when W&B logs."""
    if trainer.is_global_zero and hasattr(trainer.logger, "log_image"):
        for path in paths:
            trainer.logger.log_image(key=Path(path).stem, images=[str(path)])


def finish_logger(trainer: L.Trainer, images: Iterable[Path] = ()) -> None:
    """Logs `images` (log_images), then closes a W&B run so that consecutive runs in one process
    do not share it."""
    log_images(trainer, images)
    experiment = getattr(trainer.logger, "_experiment", None)
    if experiment is not None and hasattr(experiment, "finish"):
        experiment.finish()


class Curves(L.Callback):
    """Records the loss and the validation metrics of every epoch; at fit end writes them to
    curves.csv and curves.png in `out` (the artifact folder) and logs the PNG.

    The training loss is the training step's own loss averaged over the epoch's batches,
    whatever the family logs (IMDb logs it per step only); the validation figures are the
    epoch values the module logged (`val_*` in callback_metrics).
    """

    def __init__(self, out: Path, title: str) -> None:
        self.out, self.title = out, title
        self.history: list[dict[str, float]] = []
        # (epochs done, loss) of every step: BERT's few epochs have hundreds of steps each.
        self.steps: list[tuple[float, float]] = []
        self._losses: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._losses = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor):
            self._losses.append(float(loss.detach()))
            per_epoch = float(trainer.num_training_batches)
            done = (idx + 1) / per_epoch if 0 < per_epoch < float("inf") else 1.0
            self.steps.append((trainer.current_epoch + done, self._losses[-1]))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning runs the epoch's validation before this hook: its figures are in.
        row: dict[str, float] = {"epoch": trainer.current_epoch}
        if self._losses:
            row["train_loss"] = sum(self._losses) / len(self._losses)
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val_"):
                row[key] = float(value)
        self.history.append(row)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.history or not trainer.is_global_zero:
            return
        from train.core.plots import plot_curves

        self.out.mkdir(parents=True, exist_ok=True)
        keys = list(dict.fromkeys(k for row in self.history for k in row))
        with open(self.out / "curves.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        plot_curves(self.history, self.title, self.out / "curves.png", self.steps)
        log_images(trainer, [self.out / "curves.png"])


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


class Classifier(L.LightningModule):
    """Adam, cross-entropy and accuracy per stage around a plain nn.Module (what is exported).

    A family subclass implements `_step(batch, stage)` for its batch shape.
    """

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
        # sync_dist: under trainer=ddp the epoch figures are means over every rank's share
        # (BestWeights picks the same epoch on each); with one process it does nothing.
        self.log(
            f"{stage}_loss",
            loss,
            prog_bar=True,
            batch_size=batch_size,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
        )
        self.log(
            f"{stage}_acc",
            acc,
            prog_bar=not on_step,
            batch_size=batch_size,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
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
