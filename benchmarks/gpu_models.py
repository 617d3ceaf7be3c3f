"""The GPU profile's models and payloads (benchmarks/gpu.py): random-weight models of the
project's own classes, exported on the device and packed with the registered handlers."""

import io
import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import OmegaConf

from train.core.registry import experiment_config, spec

REVIEW_WORDS = 300
PHOTO_SIZE = (500, 375)
VIT_S16 = {"image_size": 224, "embed_dim": 384, "depth": 12, "num_heads": 6, "patch_size": 16}
# name -> the registered model whose handler serves it, and how to build it.
MODELS: dict[str, dict[str, Any]] = {
    "imdb_bert": {"served_as": "imdb_bert", "dtype": torch.float32, "workers": 4},
    "imdb_bert_bf16": {"served_as": "imdb_bert", "dtype": torch.bfloat16, "workers": 4},
    "flowers_vit": {"served_as": "flowers_vit", "workers": 8},  # its configs/model net
    "vit_s16": {"served_as": "flowers_vit", "workers": 8, "net": VIT_S16},
}


def is_text(name: str) -> bool:
    return MODELS[name]["served_as"] == "imdb_bert"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    """meta.json for the handler, metrics.json for the archive (random weights: no metrics)."""
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    (out / "metrics.json").write_text(json.dumps({"random_weights": True}) + "\n")


def export_bert(out: Path, device: torch.device, dtype: torch.dtype, art: Path) -> None:
    """Random-weight imdb_bert architecture (`art`: hf_config.json, meta.json, tokenizer/)."""
    from train.imdb.model import SequenceClassifier

    hf = json.loads((art / "hf_config.json").read_text())
    drop = {"transformers_version", "_name_or_path", "architectures", "dtype"}
    torch.manual_seed(0)
    hf_config = {k: v for k, v in hf.items() if k not in drop}
    net = SequenceClassifier("", hf.get("num_labels", 2), hf_config=hf_config)
    net = net.to(device=device, dtype=dtype).eval()
    ids = torch.randint(1000, 30000, (2, 256), device=device)
    mask = torch.ones_like(ids)
    mask[1, 100:] = 0  # trace on a padded batch, as train/imdb.py does
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.jit.trace(net, (ids, mask), check_trace=False).save(str(out / "model.pt"))
        reloaded = torch.jit.load(str(out / "model.pt"), map_location=device)
        tol = 1e-3 if dtype == torch.float32 else 5e-2
        for b, t in ((2, 256), (5, 77), (1, 9)):
            x = torch.randint(1000, 30000, (b, t), device=device)
            m = torch.ones_like(x)
            torch.testing.assert_close(reloaded(x, m), net(x, m), atol=tol, rtol=tol)
    shutil.copytree(art / "tokenizer", out / "tokenizer", dirs_exist_ok=True)
    meta = json.loads((art / "meta.json").read_text())
    write_meta(out, {**meta, "name": out.name, "dtype": str(dtype).removeprefix("torch.")})


def export_image(out: Path, device: torch.device, net_cfg: dict[str, Any] | None) -> None:
    """Random-weight ImageClassifier (Kornia preprocessing inside), scripted on `device`."""
    from train.flowers.models import ImageClassifier, KorniaViT, for_export

    class OnDevice(ImageClassifier):
        """for_export copies the model to the CPU first; here it stays on the GPU, where its
        Kornia parts must be traced (their traced graph keeps the device it saw)."""

        def cpu(self) -> "OnDevice":
            return self

    model_cfg = experiment_config("flowers_vit").model
    mean, std = list(model_cfg.mean), list(model_cfg.std)
    if net_cfg is None:  # the served flowers_vit's own net, as its config composes it
        composed = OmegaConf.to_container(model_cfg.net, resolve=True)
        assert isinstance(composed, dict)
        drop = ("_target_", "in_dim", "num_classes", "checkpoint")
        net_cfg = {str(k): v for k, v in composed.items() if k not in drop}
    cfg = {"stem_widths": None, "dropout": 0.1, **net_cfg}
    size = int(cfg["image_size"])
    torch.manual_seed(0)
    model = OnDevice(KorniaViT(in_dim=3, num_classes=5, **cfg), size, mean, std).to(device).eval()
    exported = for_export(model, torch.rand(1, 3, 97, 131, device=device))
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.jit.script(exported).save(str(out / "model.pt"))
        reloaded = torch.jit.load(str(out / "model.pt"), map_location=device)
        photos = [torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8, device=device)] * 2
        for inputs in (photos, [photos[0], photos[0][:, :200, :321]]):
            torch.testing.assert_close(reloaded(inputs), model(inputs), atol=1e-3, rtol=1e-3)
    labels = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    meta = {"name": out.name, "task": "image_classification", "labels": labels}
    write_meta(
        out, {**meta, "input_size": size, "mean": mean, "std": std, "decode": {"draft": 256}}
    )


def model_config(name: str, workers: int, batch: int, gpu: bool, work: Path) -> Path:
    """The registered model's model-config.yaml with the run's workers, batch and device."""
    cfg = yaml.safe_load(spec(MODELS[name]["served_as"]).model_config.read_text())
    cfg.update(minWorkers=workers, maxWorkers=workers, batchSize=batch, maxBatchDelay=5)
    cfg.update(responseTimeout=120, deviceType="gpu" if gpu else "cpu")
    path = work / f"{name}-config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def reviews(tokenizer_dir: Path, n: int, seed: int = 0) -> list[bytes]:
    """n reviews of REVIEW_WORDS whole words from the vocabulary (all longer than 256 tokens)."""
    vocab = json.loads((tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"]
    words = [w for w in vocab if w.isalpha() and w.isascii() and len(w) > 2]
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=REVIEW_WORDS)).encode() for _ in range(n)]


def photos(n: int, seed: int = 0) -> list[bytes]:
    """n JPEGs of PHOTO_SIZE: smooth random colour fields with a little noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        big = np.asarray(small.resize(PHOTO_SIZE, Image.BILINEAR), dtype=np.int16)
        big = np.clip(big + rng.integers(-12, 13, big.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(big).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def payloads(name: str, art: Path) -> tuple[list[bytes], str]:
    if is_text(name):
        return reviews(art / "tokenizer", 64), "text/plain"
    return photos(32), "image/jpeg"
