"""Flower test photos held out and corrupted with Kornia: the `shifts` hook of both flowers models.

Gaussian blur (sigma in px), Gaussian noise (sigma on [0, 1] pixels), darkening (brightness
down and contrast down by the severity), JPEG quality, and rotation (degrees, corners black).
Each corrupted photo is sent as a JPEG of quality 95, as a camera would; the JPEG shift sends
its own quality.
"""

import io
import random
from typing import Any

import kornia
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from train.core.shifts import Case, Shift, ShiftSet
from train.flowers.data import ImageSet


def to_tensor(photo: bytes) -> Tensor:
    """(1, 3, H, W) float in [0, 1]."""
    rgb = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)


def to_jpeg(image: Tensor, quality: int = 95) -> bytes:
    arr = (image[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def blur(image: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    k = 2 * int(2 * sigma) + 1
    return kornia.filters.gaussian_blur2d(image, (k, k), (sigma, sigma))


def noise(image: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    return image + sigma * torch.randn(image.shape, generator=gen)


def darken(image: Tensor, s: float, gen: torch.Generator) -> Tensor:
    dark = kornia.enhance.adjust_brightness(image, -s, clip_output=True)
    return kornia.enhance.adjust_contrast(dark, 1.0 - s, clip_output=True)


def rotate(image: Tensor, degrees: float, gen: torch.Generator) -> Tensor:
    return kornia.geometry.transform.rotate(image, torch.tensor([degrees]))


SHIFTS = {
    "blur": (blur, [1.0, 2.0, 4.0], "px"),
    "noise": (noise, [0.04, 0.08, 0.16], "sigma"),
    "darken": (darken, [0.15, 0.3, 0.45], "share"),
    "rotation": (rotate, [15.0, 45.0, 90.0], "°"),
}


def flowers_shifts(data_cfg: Any, size: int, rng: random.Random) -> ShiftSet:
    """`size` photos of the fixed test split (configs/train.yaml's seed 42), as JPEG bytes."""
    data = ImageSet(data_cfg, seed=42)
    test = data.split["test"]
    picks = sorted(rng.sample(test, min(size, len(test))))
    photos = [(data.paths[i].read_bytes(), data.targets[i]) for i in picks]
    seed = rng.randrange(2**31)

    def make(fn: Any) -> Any:
        def at(severity: float) -> list[Case]:
            gen = torch.Generator().manual_seed(seed)
            return [
                Case("image/jpeg", to_jpeg(fn(to_tensor(p), severity, gen)), y) for p, y in photos
            ]

        return at

    def jpeg(quality: float) -> list[Case]:
        return [Case("image/jpeg", to_jpeg(to_tensor(p), int(quality)), y) for p, y in photos]

    shifts = {name: Shift(sev, make(fn), unit=u) for name, (fn, sev, u) in SHIFTS.items()}
    shifts["jpeg"] = Shift([30.0, 15.0, 5.0], jpeg, unit="quality")
    return ShiftSet(clean=[Case("image/jpeg", p, y) for p, y in photos], shifts=shifts)
