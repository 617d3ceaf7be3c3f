"""Flower photos: config -> data -> model -> fit -> evaluate -> export (flowers_vit, flowers_cnn).

Augmentation is a Kornia AugmentationSequential inside the LightningModule, so it runs batched
on the model's device (a GPU when there is one). The exported TorchScript module resizes and
normalises inside its graph; validation and test go through that same forward on the decoded
photos at their own sizes, exactly as serving does.
"""

import copy
import io
import json
import math
import time
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from kornia.geometry.transform import resize
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from train.core.export import export_torchscript
from train.core.handlers import decode_image, image_stats
from train.core.plots import plot_confusion
from train.core.reference import sample, write_reference
from train.core.scores import scores
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

    def __init__(
        self,
        model: ImageClassifier,
        augment: nn.Module,
        optim: dict[str, Any],
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        # channels_last (model.channels_last): the conv weights and each training batch in NHWC,
        # which oneDNN's CPU convolutions and max pooling prefer. make profile-train showed NCHW
        # max pooling and conv backward taking 42% of a flowers_cnn step; NHWC made the step
        # 1.3-1.4 times faster (docs/training.md). Export converts the weights back.
        self.channels_last = channels_last
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
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
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
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


def predict(model: nn.Module, images: list[Tensor]) -> Tensor:
    """Top-1 class per photo through the model's own forward, in float32 as served."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(images[i : i + 64]).argmax(-1) for i in range(0, len(images), 64)])


def upscaled(photos: list[Tensor], long_side: int, draft: int) -> list[Tensor]:
    """Each photo upscaled (Lanczos) to `long_side`, saved as a JPEG and decoded as served.

    The mirror's copies are at most 256 px; the original Flickr photos are larger, so this is
    how the served model meets full-size uploads, JPEG draft decoding included.
    """
    out = []
    for x in photos:
        h, w = x.shape[1:]
        scale = long_side / max(h, w)
        im = Image.fromarray(x.permute(1, 2, 0).numpy()).resize(
            (round(w * scale), round(h * scale)), Image.Resampling.LANCZOS
        )
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(decode_image(buf.getvalue(), 10**9, draft))
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    """Trains, validates and exports an image classifier; scores the test photos unless told not.

    Every reported accuracy comes from the final weights' own float32 forward (EMA, flip
    averaging), exactly as served, not from Lightning's loop (which runs under `precision`).
    """
    run_start, run_cpu = time.perf_counter(), time.process_time()
    if cfg.get("threads"):
        # CPU kernels split their sums by thread, so the weights depend on the thread count:
        # pinning it makes a run reproduce bit for bit on any machine of the same kind.
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True)
    data = ImageSet(cfg.data, cfg.seed)
    train_x, train_y = data.subset("train")
    val_x, val_y = data.subset("val")
    size = cfg.model.input_size
    side = math.ceil(cfg.data.augment.canvas_scale * size)
    train_loader = DataLoader(
        TensorDataset(canvas(train_x, side), train_y),
        batch_size=cfg.data.batch_size,
        shuffle=True,
        drop_last=len(train_y) > cfg.data.batch_size,
    )
    del train_x  # the canvases are all that training reads
    val_loader = DataLoader(
        list(zip(val_x, val_y.tolist())), batch_size=64, collate_fn=collate_images
    )

    net = instantiate(cfg.model.net, in_dim=3, num_classes=len(data.classes))
    model = ImageClassifier(
        net, size, list(cfg.model.mean), list(cfg.model.std), cfg.model.get("flip_tta", False)
    )
    module = FlowerClassifier(
        model,
        make_augment(cfg.data.augment, size),
        OmegaConf.to_container(cfg.optim, resolve=True),
        channels_last=bool(cfg.model.get("channels_last", False)),
    )
    # `last` keeps the annealed weights of the one-cycle schedule; `best_val` picks the epoch by
    # val_acc instead.
    callbacks = [BestWeights("val_acc", "max")] if cfg.select == "best_val" else []
    trainer = make_trainer(cfg, callbacks)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, train_loader, val_loader)
    fit_seconds, fit_cpu = time.perf_counter() - start, time.process_time() - cpu

    model = module.final_model().cpu().float().eval()
    val = scores(predict(model, val_x), val_y, data.classes)
    metrics: dict[str, Any] = {
        "model": cfg.name,
        "dataset": cfg.data.name,
        "photos_in_folder": len(data.paths),
        "split_sizes": {k: len(v) for k, v in data.split.items()},
        "val_acc": val["acc"],
        "val_acc_ci95": val["acc_ci95"],
    }
    metrics |= {
        "epochs": cfg.trainer.max_epochs,
        "precision": str(trainer.precision),  # what ran (train.core.trainer.cpu_precision)
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
    metrics["val_confusion"] = val["confusion"]
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
    export_image_model(model, val_x[:4], cfg.paths.artifacts, meta, metrics)
    write_image_reference(model, data, cfg.paths.artifacts, meta, cfg.seed)
    images = []  # the W&B run stays open until the test confusion matrix is drawn
    if cfg.get("evaluate_test", True):
        metrics = score_test(cfg, data)
        images.append(Path(cfg.paths.artifacts) / "confusion.png")
    finish_logger(trainer, images)
    return metrics


@torch.no_grad()
def write_image_reference(
    model: ImageClassifier, data: ImageSet, out_dir: str, meta: dict, seed: int
) -> None:
    """The drift reference: sampled training photos as decoded for serving, with the model's
    penultimate features and predicted label."""
    model.eval()
    idx = data.split["train"]
    photos = [data.image(idx[i]) for i in sample(len(idx), seed)]
    emb = torch.cat([model.embed(photos[i : i + 64]) for i in range(0, len(photos), 64)])
    pred = predict(model, photos).tolist()
    stats = [image_stats(x) for x in photos]
    write_reference(out_dir, meta["name"], stats, emb, pred, meta["labels"])


def score_test(cfg: DictConfig, data: ImageSet | None = None) -> dict[str, Any]:
    """Scores the test photos with the exported model.pt, as served; adds them to metrics.json.

    Also `python -m train.flowers score experiment=<name>`, for a run made with
    `evaluate_test=false` (a hyperparameter run that read only the validation photos).
    """
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.paths.artifacts)
    data = data or ImageSet(cfg.data, cfg.seed)
    model = torch.jit.load(str(out / "model.pt")).eval()
    test_x, test_y = data.subset("test")
    test = scores(predict(model, test_x), test_y, data.classes)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics |= {
        "test_acc": test["acc"],
        "test_acc_ci95": test["acc_ci95"],
        "test_acc_per_class": test["per_class"],
        "test_confusion": test["confusion"],
    }
    # Full-size uploads: the same test photos upscaled past the mirror's 256 px.
    for long_side in cfg.get("upscaled_test", []):
        big = upscaled(test_x, long_side, cfg.data.decode.draft)
        metrics[f"test_acc_upscaled_{long_side}"] = scores(
            predict(model, big), test_y, data.classes
        )["acc"]
    plot_confusion(test, data.classes, cfg.name, out / "confusion.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def export_image_model(
    model: ImageClassifier, photos: list[Tensor], out_dir: str, meta: dict, metrics: dict
) -> None:
    """Scripts the model (Kornia parts traced) and checks the saved file against eager.

    export_torchscript checks the scripted wrapper against its traced parts; this also checks
    the reloaded file against the untraced eager model on real photos of their own sizes, as a
    float batch, and at sizes the tracer never saw.
    """
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
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
