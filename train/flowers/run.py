"""Flower photos: config -> data -> model -> fit -> evaluate -> export (flowers_vit, flowers_cnn).

Augmentation is a Kornia AugmentationSequential inside the LightningModule, so it runs batched
on the model's device (a GPU when there is one). The exported TorchScript module resizes and
normalises inside its graph; validation and test go through that same forward on the decoded
photos at their own sizes, exactly as serving does.
"""

import copy
import math
import time
from typing import Any

import kornia.augmentation as K
import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from kornia.geometry.transform import resize
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from train.core.export import export_torchscript
from train.core.trainer import BestWeights, finish_logger, make_trainer
from train.flowers.data import ImageSet
from train.flowers.models import ImageClassifier, for_export


def make_augment(aug_cfg: Any, size: int) -> K.AugmentationSequential:
    """Random resized crop to the input size, horizontal flip and colour jitter, batched."""
    j = aug_cfg.jitter
    return K.AugmentationSequential(
        K.RandomResizedCrop(
            (size, size), scale=tuple(aug_cfg.crop_scale), ratio=tuple(aug_cfg.crop_ratio)
        ),
        K.RandomHorizontalFlip(p=aug_cfg.hflip),
        K.ColorJitter(j.brightness, j.contrast, j.saturation, j.hue, p=j.p),
    )


def canvas(images: list[Tensor], side: int) -> Tensor:
    """uint8 (3, H, W) photos -> float (N, 3, side, side) in [0, 1] (Kornia area resize)."""
    return torch.cat(
        [resize(x.unsqueeze(0).float() / 255.0, (side, side), interpolation="area") for x in images]
    )


def collate_images(batch: list[tuple[Tensor, int]]) -> tuple[list[Tensor], Tensor]:
    """Photos of different sizes stay a list: the model resizes each, as in serving."""
    return [x for x, _ in batch], torch.tensor([y for _, y in batch])


class FlowerClassifier(L.LightningModule):
    """Trains an ImageClassifier on augmented canvases; evaluates it on the decoded photos.

    With `optim.ema` (a decay such as 0.99) it also keeps an exponential moving average of the
    weights (BatchNorm statistics included), and validation, test and export use that average.
    """

    def __init__(self, model: ImageClassifier, augment: nn.Module, optim: dict[str, Any]) -> None:
        super().__init__()
        self.model, self.augment = model, augment
        self.optim = optim
        self.ema = copy.deepcopy(model).requires_grad_(False) if optim.get("ema") else None

    def final_model(self) -> ImageClassifier:
        """The weights that are evaluated and exported: the EMA when there is one."""
        return self.ema if self.ema is not None else self.model

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(
            self.model.parameters(), lr=self.optim["lr"], weight_decay=self.optim["weight_decay"]
        )
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=self.optim["lr"],
            total_steps=int(self.trainer.estimated_stepping_batches),
            pct_start=self.optim["pct_start"],
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        with torch.no_grad():
            x = self.augment(x)  # (B, 3, canvas, canvas) -> (B, 3, S, S) on the model's device
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.optim["label_smoothing"])
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        self.log("train_acc", acc, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is None:
            return
        # The usual warm-up: early on the average follows the weights closely.
        step = self.global_step
        decay = min(float(self.optim["ema"]), (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for avg, cur in zip(self.ema.state_dict().values(), self.model.state_dict().values()):
                if avg.dtype.is_floating_point:
                    avg.mul_(decay).add_(cur, alpha=1.0 - decay)
                else:
                    avg.copy_(cur)

    def _eval(self, batch: tuple[list[Tensor], Tensor], stage: str) -> None:
        images, y = batch
        logits = self.final_model()(images)
        self.log(f"{stage}_loss", F.cross_entropy(logits, y), batch_size=len(y), prog_bar=True)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log(f"{stage}_acc", acc, batch_size=len(y), prog_bar=True)

    def validation_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> None:
        self._eval(batch, "val")

    def test_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> None:
        self._eval(batch, "test")


def per_class_accuracy(model: nn.Module, images: list[Tensor], y: Tensor, classes: list[str]):
    """Test accuracy per class and the confusion matrix (rows: true, columns: predicted)."""
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(images[i : i + 64]).argmax(-1) for i in range(0, len(images), 64)])
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long)
    for t, p in zip(y.tolist(), pred.tolist()):
        confusion[t, p] += 1
    per_class = {
        c: round(float(confusion[i, i] / confusion[i].sum()), 4) for i, c in enumerate(classes)
    }
    return per_class, confusion.tolist()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Trains, tests and exports an image classifier; returns the test metrics."""
    run_start, run_cpu = time.perf_counter(), time.process_time()
    L.seed_everything(cfg.seed, workers=True)
    data = ImageSet(cfg.data, cfg.seed)
    train_x, train_y = data.subset("train")
    val_x, val_y = data.subset("val")
    test_x, test_y = data.subset("test")
    size = cfg.model.input_size
    side = math.ceil(cfg.data.augment.canvas_scale * size)
    train_loader = DataLoader(
        TensorDataset(canvas(train_x, side), train_y),
        batch_size=cfg.data.batch_size,
        shuffle=True,
        drop_last=len(train_y) > cfg.data.batch_size,
    )

    def eval_loader(x: list[Tensor], y: Tensor) -> DataLoader:
        return DataLoader(list(zip(x, y.tolist())), batch_size=64, collate_fn=collate_images)

    net = instantiate(cfg.model.net, in_dim=3, num_classes=len(data.classes))
    model = ImageClassifier(
        net, size, list(cfg.model.mean), list(cfg.model.std), cfg.model.get("flip_tta", False)
    )
    module = FlowerClassifier(
        model,
        make_augment(cfg.data.augment, size),
        OmegaConf.to_container(cfg.optim, resolve=True),
    )
    # `last` keeps the annealed weights of the one-cycle schedule; `best_val` picks the epoch by
    # val_acc, which on 150 photos mostly picks noise.
    callbacks = [BestWeights("val_acc", "max")] if cfg.select == "best_val" else []
    trainer = make_trainer(cfg, callbacks)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, train_loader, eval_loader(val_x, val_y))
    fit_seconds, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    val = trainer.validate(module, eval_loader(val_x, val_y), verbose=False)[0]
    test = trainer.test(module, eval_loader(test_x, test_y), verbose=False)[0]
    finish_logger(trainer)

    model = module.final_model().cpu().eval()
    per_class, confusion = per_class_accuracy(model, test_x, test_y, data.classes)
    metrics = {
        "model": cfg.name,
        "dataset": cfg.data.name,
        "photos_in_folder": len(data.paths),
        "val_acc": round(val["val_acc"], 4),
        "test_acc": round(test["test_acc"], 4),
        "test_acc_per_class": per_class,
        "test_confusion": confusion,
        "split_sizes": {k: len(v) for k, v in data.split.items()},
        "epochs": cfg.trainer.max_epochs,
        "weights": cfg.select,
        "ema": cfg.optim.get("ema"),
        "flip_tta": cfg.model.get("flip_tta", False),
        "fit_seconds": round(fit_seconds, 1),
        "fit_cpu_seconds": round(fit_cpu, 1),  # all threads of the process
        # Decode, fit, validate and test (export follows).
        "run_seconds": round(time.perf_counter() - run_start, 1),
        "run_cpu_seconds": round(time.process_time() - run_cpu, 1),
        "torch_threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in net.parameters()),
        "seed": cfg.seed,
    }
    meta = {
        "name": cfg.name,
        "task": "image_classification",
        "labels": data.classes,
        "input_size": size,
        "mean": list(cfg.model.mean),
        "std": list(cfg.model.std),
        # How requests must be decoded to match training (the handler reads this).
        "decode": {"draft": cfg.data.decode.draft},
        "inputs": ["images: uint8 or float RGB, a (B, 3, H, W) tensor or a list of (3, H, W)"],
        "model_cfg": OmegaConf.to_container(cfg.model.net, resolve=True),
    }
    export_image_model(model, test_x[:4], cfg.paths.artifacts, meta, metrics)
    return metrics


def export_image_model(
    model: ImageClassifier, photos: list[Tensor], out_dir: str, meta: dict, metrics: dict
) -> None:
    """Scripts the model (Kornia parts traced) and checks the saved file against eager.

    export_torchscript checks the scripted wrapper against its traced parts; this also checks
    the reloaded file against the untraced eager model on real photos of their own sizes, as a
    float batch, and at sizes the tracer never saw.
    """
    model = model.cpu().eval()
    exported = for_export(model, photos[0].unsqueeze(0).float() / 255.0)
    out = export_torchscript(exported, (photos,), out_dir, meta, metrics)
    reloaded = torch.jit.load(str(out / "model.pt"))
    checks: list[Any] = [
        photos,
        torch.stack([photos[0], photos[0]]),
        canvas(photos, 300),
        [photos[0][:, :17, :9], photos[1]],
    ]
    with torch.no_grad():
        for inputs in checks:
            torch.testing.assert_close(reloaded(inputs), model(inputs), atol=1e-4, rtol=1e-4)
