"""Image bytes to a uint8 (3, H, W) RGB tensor, with the limits checked before pixels are decoded.

Training decodes its photos with this same `decode_image` (train/flowers/data.py), so the model
sees the same tensor in training and in serving.
"""

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from request_error import RequestError
from torch import Tensor


@dataclass
class ImageItem:
    """One decoded image, its requested k (None: the request's or the config's default), and
    the size of the encoded image the client sent (bytes)."""

    image: Tensor
    k: Optional[int] = None
    nbytes: int = 0


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparent pixels are composited over white, not dropped."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit and float greyscale: scale the full range to 8 bits (convert("L") clips).
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def shrink(im: Image.Image, draft: Optional[int]) -> Image.Image:
    """Any format as JPEG's draft mode decodes it: halved while the short side stays >= draft.

    A full-size PNG or WebP would otherwise stay at full size until the model resizes it, in
    float: 24 Mpx held about 690 MiB per photo in the worker (benchmarks/faults.py). The
    mirror's photos (256 px) and drafted JPEGs are already under 2 * draft and do not change.
    """
    if not draft:
        return im
    factor = 1
    while min(im.size) // (factor * 2) >= draft:
        factor *= 2
    return im.reduce(factor) if factor > 1 else im


def decode_image(
    data: bytes,
    max_pixels: int,
    draft: Optional[int],
    formats: Optional[list[str]] = None,
    field: str = "body",
) -> Tensor:
    """Decodes one image to uint8 (3, H, W) or raises RequestError naming `field`.

    `Image.open` reads only the header, so the pixel count is checked before any pixel is
    decoded (a decompression bomb costs a few bytes of reading). Only `formats` are tried, so
    no exotic decoder (EPS runs Ghostscript) is reachable from a request.
    """
    if not data:
        raise RequestError(field, "empty: expected image bytes (JPEG, PNG, WebP, ...)")
    try:
        with Image.open(io.BytesIO(data), formats=formats) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise RequestError(field, f"{w}x{h} = {w * h} pixels exceeds {max_pixels}", 413)
            if draft and im.format == "JPEG":
                im.draft("RGB", (draft, draft))
            im.load()
            rgb = shrink(to_rgb(ImageOps.exif_transpose(im)), draft)
    except RequestError:
        raise
    except UnidentifiedImageError:
        allowed = ", ".join(formats) if formats else "any Pillow format"
        raise RequestError(field, f"not an image in a supported format ({allowed})") from None
    except Image.DecompressionBombError as e:
        raise RequestError(field, str(e), 413) from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is the client's bad bytes
        raise RequestError(field, f"could not decode the image: {e}") from None
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def image_stats(image: Tensor) -> dict[str, float]:
    """The drift monitor's input statistics of one decoded uint8 (3, H, W) photo.

    Brightness and contrast (mean and spread of the luma), mean R, G, B, a sharpness score (mean
    absolute difference of neighbouring pixels: blur lowers it), JPEG blockiness (`blockiness`)
    and the size. The handler's payload log and training's reference profile
    (train/core/reference.py) both call this.
    """
    x = image.float() / 255.0  # (3, H, W)
    luma = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]  # ITU-R BT.601, (H, W)
    sharp = 0.0
    if min(luma.shape) > 1:
        sharp = float(
            (luma[1:] - luma[:-1]).abs().mean() + (luma[:, 1:] - luma[:, :-1]).abs().mean()
        )
    mean_rgb = x.mean(dim=(1, 2)).tolist()
    return {
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()) if luma.numel() > 1 else 0.0,
        "red": mean_rgb[0],
        "green": mean_rgb[1],
        "blue": mean_rgb[2],
        "sharpness": sharp / 2,
        "blockiness": blockiness(luma),
        "width": float(image.size(2)),
        "height": float(image.size(1)),
    }


def blockiness(luma: Tensor, block: int = 8) -> float:
    """How much larger the luma steps across JPEG's 8 x 8 block edges are than the steps inside
    the blocks: about 1 for a clean photo, above it once a coarse quantiser leaves block edges.

    A no-reference blockiness measure in the spirit of Wang, Sheikh and Bovik (ICIP 2002),
    reduced to the ratio of two means; no image-quality library here computes one on a tensor,
    and this is two slicing ops. It reads the decoded pixels, so a low-quality JPEG that was
    re-saved losslessly, or at a high quality, still shows.
    """
    dh = (luma[:, 1:] - luma[:, :-1]).abs()  # (H, W-1): column j is the step from j to j+1
    dv = (luma[1:] - luma[:-1]).abs()
    if dh.size(1) < 2 * block or dv.size(0) < 2 * block:
        return 1.0
    on_h, on_v = dh[:, block - 1 :: block], dv[block - 1 :: block]
    edges = float(on_h.sum() + on_v.sum()) / (on_h.numel() + on_v.numel())
    inside = float(dh.sum() + dv.sum() - on_h.sum() - on_v.sum()) / (
        dh.numel() + dv.numel() - on_h.numel() - on_v.numel()
    )
    return edges / inside if inside > 0 else 1.0


def b64_bytes(value: Any, max_bytes: int, field: str = "b64") -> bytes:
    """Decodes standard or URL-safe base64 (a data: URL prefix is allowed), size-checked first."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        value = value["b64"]  # TF Serving style {"b64": "..."} nested under a name
    if not isinstance(value, str):
        raise RequestError(field, f"must be a base64 string, got {type(value).__name__}")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    value = "".join(value.split())
    if len(value) * 3 // 4 > max_bytes:
        raise RequestError(field, f"about {len(value) * 3 // 4} bytes exceeds {max_bytes}", 413)
    altchars = b"-_" if ("-" in value or "_" in value) else None
    value += "=" * (-len(value) % 4)  # clients often strip the padding
    try:
        return base64.b64decode(value, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(field, f"not valid base64: {e}") from None


def topk_value(value: Any, num_classes: int, field: str = "topk") -> int:
    """Parses k (int, or a digit string from a query or form field); clamps it to the classes."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(field, f"must be a positive integer, got {value!r}")
    return min(value, num_classes)
