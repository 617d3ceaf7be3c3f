"""Flower photos: the fixed stratified split, and the decoding that training and serving share."""

import base64
import io
import zlib
from pathlib import Path

import image_request
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from json_batch_handler import RequestError
from tests.conftest import CONFIGS, mirror
from train.flowers import data as image_data
from train.flowers.data import ImageSet, list_images, stratified_split

needs_mirror = pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")
LABELS = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def decoded(data: bytes, max_pixels: int = 10**7, draft: int | None = 256) -> torch.Tensor:
    """Decodes with the one decoder that training and the handler share (test_decode_once.py)."""
    assert image_data.decode_image is image_request.decode_image
    img = image_request.decode_image(data, max_pixels, draft)
    assert img.dtype == torch.uint8 and img.shape[0] == 3
    return img


def assert_split_properties(targets: list[int], split: dict[str, list[int]], fractions) -> None:
    """Every photo in exactly one part, and each part holds its fraction of every class."""
    parts = list(split.values())
    everything = [i for part in parts for i in part]
    assert sorted(everything) == list(range(len(targets)))  # complete, and no photo twice
    assert all(set(a).isdisjoint(b) for j, a in enumerate(parts) for b in parts[j + 1 :])
    y = torch.tensor(targets)
    per_class = torch.bincount(y)
    for name, idx in split.items():
        counts = torch.bincount(y[idx], minlength=len(per_class))
        # Stratified: within one photo of rounding of the class's own share (the last part
        # takes the remainders of the parts before it).
        expected = fractions[name] * per_class
        assert ((counts - expected).abs() <= len(split)).all(), (name, counts, expected)


def test_split_is_stratified_disjoint_complete_and_fixed():
    targets = [c for c in range(5) for _ in range(150)]
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    split = stratified_split(targets, fractions, seed=42)
    y = torch.tensor(targets)
    for name, n in [("train", 90), ("val", 30), ("test", 30)]:
        assert torch.bincount(y[split[name]], minlength=5).tolist() == [n] * 5
    assert_split_properties(targets, split, fractions)
    assert split == stratified_split(targets, fractions, seed=42)
    assert split != stratified_split(targets, fractions, seed=1)


def test_configured_split_has_the_properties_on_unequal_classes():
    """The configured fractions on classes of different sizes, as the full photo set has."""
    configured = dict(OmegaConf.load(CONFIGS / "data" / "flowers.yaml").split)
    assert sum(configured.values()) == pytest.approx(1.0)
    targets = [c for c, n in enumerate([613, 878, 621, 679, 779]) for _ in range(n)]
    split = stratified_split(targets, configured, seed=42)
    assert_split_properties(targets, split, configured)
    assert split == stratified_split(targets, configured, seed=42)


def test_split_keeps_remainders_and_caps_per_class():
    targets = [0] * 7 + [1] * 11
    split = stratified_split(targets, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    assert sum(len(v) for v in split.values()) == 18
    capped = stratified_split(targets, {"train": 0.5, "test": 0.5}, seed=0, max_per_class=4)
    y = torch.tensor(targets)
    assert torch.bincount(y[capped["train"] + capped["test"]]).tolist() == [4, 4]


def test_list_images_checks_the_expected_classes(tmp_path):
    for c in ("b_class", "a_class"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "x.jpg").write_bytes(b"")
    (tmp_path / "a_class" / "notes.txt").write_text("not an image")
    items, classes = list_images(tmp_path)
    assert classes == ["a_class", "b_class"]
    assert [(p.name, t) for p, t in items] == [("x.jpg", 0), ("x.jpg", 1)]
    with pytest.raises(ValueError, match="expects"):
        list_images(tmp_path, ["a_class", "c_class"])


@needs_mirror
def test_mirror_split_is_fixed_stratified_disjoint_and_complete(tmp_path):
    """The configured split of every photo in the mirror (no count is hard-coded)."""
    cfg = OmegaConf.load(CONFIGS / "data" / "flowers.yaml")
    cfg.root, cfg.mirror = str(tmp_path), mirror()
    data = ImageSet(cfg, seed=42)
    on_disk = sorted(Path(mirror(), "flowers").glob("*/*.jpg"))
    assert data.classes == LABELS and len(data.paths) == len(on_disk)
    assert sorted(p.name for p in data.paths) == sorted(p.name for p in on_disk)
    assert all(p.is_symlink() for p in data.paths)  # linked, never copied from the mirror
    assert_split_properties(data.targets, data.split, dict(cfg.split))
    again = ImageSet(cfg, seed=42)
    assert again.split == data.split and again.paths == data.paths  # deterministic
    # The test photos are what the seed says, not what the folder's listing order says.
    test_names = {data.paths[i].name for i in data.split["test"]}
    assert test_names != {again.paths[i].name for i in ImageSet(cfg, seed=7).split["test"]}
    first = data.image(data.split["test"][0])
    assert first.dtype == torch.uint8 and first.shape[0] == 3


@needs_mirror
def test_real_photos_decode_identically_in_training_and_serving():
    photos = sorted(Path(mirror(), "flowers").glob("*/*.jpg"))[::75]
    for p in photos:
        data = p.read_bytes()
        img = decoded(data)
        with Image.open(p) as im:
            assert tuple(img.shape[1:]) == (im.height, im.width)
            assert torch.equal(img, torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))


def test_colour_modes_become_rgb():
    grey = Image.new("L", (4, 3), 77)
    assert decoded(encode(grey, "PNG")).unique().tolist() == [77]

    rgba = Image.new("RGBA", (4, 3), (200, 10, 10, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent: white, not black
    rgba.putpixel((1, 0), (0, 0, 0, 128))  # half transparent black over white: grey
    img = decoded(encode(rgba, "PNG"))
    assert img[:, 0, 0].tolist() == [255, 255, 255]
    assert all(abs(v - 127) <= 1 for v in img[:, 0, 1].tolist())
    assert img[:, 2, 3].tolist() == [200, 10, 10]

    pal = Image.new("P", (4, 3), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert decoded(encode(pal, "PNG"))[:, 1, 1].tolist() == [10, 200, 30]
    pal.info["transparency"] = 1
    assert decoded(encode(pal, "GIF", transparency=1))[:, 1, 1].tolist() == [255, 255, 255]

    la = Image.new("LA", (2, 2), (50, 0))
    assert decoded(encode(la, "PNG")).unique().tolist() == [255]

    deep = Image.fromarray(np.full((3, 4), 65535, dtype=np.uint16))
    assert decoded(encode(deep, "PNG")).unique().tolist() == [255]

    cmyk = Image.new("CMYK", (4, 3), (0, 255, 255, 0))  # pure red in CMYK
    r, g, b = decoded(encode(cmyk, "JPEG", quality=95))[:, 1, 1].tolist()
    assert r > 200 and g < 60 and b < 60

    assert decoded(encode(Image.new("1", (4, 3), 1), "PNG")).unique().tolist() == [255]


def test_exif_rotation_is_applied():
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img = decoded(encode(im, "JPEG", exif=exif))
    assert tuple(img.shape) == (3, 40, 20)


def test_large_jpeg_is_decoded_at_a_reduced_scale_not_below_draft():
    big = Image.new("RGB", (1600, 1200), (30, 160, 40))
    img = decoded(encode(big, "JPEG"), draft=256)
    assert tuple(img.shape[1:]) == (300, 400)  # 1/4 scale keeps both sides >= 256
    # Other formats are reduced to the same scale (image_request.shrink), not kept full size.
    assert tuple(decoded(encode(big, "PNG"), draft=256).shape[1:]) == (300, 400)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries one tiny IDAT: a decompression bomb's
    header. Decoding it would fail (400), so a 413 shows the limit was checked first."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    bomb = png_header_only(6000, 5000)  # 30 MP: over our limit, under Pillow's own
    with pytest.raises(RequestError) as err:
        image_request.decode_image(bomb, 24_000_000, 256)
    assert err.value.code == 413 and "6000x5000 = 30000000 pixels" in err.value.problem
    with pytest.raises(ValueError, match="exceeds"):
        image_data.decode_image(bomb, 24_000_000, 256)
    # Under the limit the same bytes reach the decoder, which finds the data truncated.
    with pytest.raises(RequestError) as err:
        image_request.decode_image(bomb, 40_000_000, 256)
    assert err.value.code == 400
    # Past Pillow's own bomb limit, Image.open refuses it: also 413.
    with pytest.raises(RequestError) as err:
        image_request.decode_image(png_header_only(60000, 60000), 10**10, 256)
    assert err.value.code == 413


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "empty"),
        (b"hello, not an image", "not an image"),
        (encode(Image.new("RGB", (64, 64), 9), "JPEG")[:300], "could not decode"),
        (encode(Image.new("RGB", (8, 8)), "TIFF"), "not an image"),  # not an allowed format
    ],
    ids=["zero-bytes", "not-image", "truncated-jpeg", "format-not-allowed"],
)
def test_bad_bytes_raise_request_errors(data, problem):
    with pytest.raises(RequestError) as err:
        image_request.decode_image(data, 10**7, 256, ["JPEG", "PNG"], field="data")
    assert err.value.code == 400 and err.value.field == "data" and problem in err.value.problem


def test_base64_forms_and_limits():
    raw = encode(Image.new("RGB", (5, 5), 3), "PNG")
    std = base64.b64encode(raw).decode()
    assert image_request.b64_bytes(std, 10**6) == raw
    assert image_request.b64_bytes(base64.urlsafe_b64encode(raw).decode().rstrip("="), 10**6) == raw
    assert image_request.b64_bytes("data:image/png;base64," + std, 10**6) == raw
    assert image_request.b64_bytes({"b64": std}, 10**6) == raw
    for bad in ("%%%not base64", 12, "abcde"):
        with pytest.raises(RequestError) as err:
            image_request.b64_bytes(bad, 10**6)
        assert err.value.code == 400
    with pytest.raises(RequestError) as err:
        image_request.b64_bytes(std, 10)
    assert err.value.code == 413
