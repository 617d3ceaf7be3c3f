"""Full-size photos of any format are reduced as JPEG's draft mode reduces them."""

import io

import numpy as np
from image_request import decode_image, shrink
from PIL import Image

DRAFT = 256


def encoded(size: tuple[int, int], fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def test_a_large_png_is_halved_while_its_short_side_stays_at_least_draft():
    t = decode_image(encoded((3000, 2100), "PNG"), 24_000_000, DRAFT)
    assert tuple(t.shape) == (3, 263, 375)  # 1/8 (Pillow rounds 262.5 up): 1/16 is below 256


def test_a_large_jpeg_ends_at_the_same_scale_as_the_png():
    jpeg = decode_image(encoded((3000, 2100), "JPEG"), 24_000_000, DRAFT)
    png = decode_image(encoded((3000, 2100), "PNG"), 24_000_000, DRAFT)
    assert jpeg.shape == png.shape


def test_mirror_sized_photos_and_no_draft_are_left_alone():
    small = Image.new("RGB", (256, 340))
    assert shrink(small, DRAFT) is small
    big = Image.new("RGB", (4000, 3000))
    assert shrink(big, None) is big
    assert shrink(Image.new("RGB", (600, 511)), DRAFT).size == (600, 511)
    assert shrink(Image.new("RGB", (600, 512)), DRAFT).size == (300, 256)
