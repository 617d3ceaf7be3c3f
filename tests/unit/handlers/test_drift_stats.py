"""The drift monitor's input statistics that a shift of its own kind moves: capitals in text,
JPEG blockiness in photos, and the spread of QM9's X-H bonds; and what leaves them alone."""

import io
import math

import numpy as np
import pytest
import torch
from image_request import blockiness, image_stats
from PIL import Image
from text_request import text_stats

from molecule_request import molecule_stats

ELEMENTS = [1, 6, 7, 8, 9]


def test_upper_frac_counts_capital_letters_only() -> None:
    quiet = text_stats("A fine film, 10/10!", [101, 1, 2, 102], None)
    loud = text_stats("A FINE FILM, 10/10!", [101, 1, 2, 102], None)
    assert quiet["upper_frac"] == pytest.approx(1 / 9)  # "A" of 9 letters; digits don't count
    assert loud["upper_frac"] == 1.0
    assert text_stats("", [101, 102], None)["upper_frac"] == 0.0
    assert text_stats("12 34", [101, 102], None)["upper_frac"] == 0.0


def photo(seed: int = 0, size: int = 128) -> Image.Image:
    """A smooth synthetic photo with some texture: gradients plus low-amplitude noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in (0.0, 1.0, 2.0)], -1)
    rgb = (127 + 90 * base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb)


def decoded(image: Image.Image, quality: int) -> torch.Tensor:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    rgb = np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def test_blockiness_rises_as_jpeg_quality_falls() -> None:
    img = photo()
    lossless = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    scores = {q: image_stats(decoded(img, q))["blockiness"] for q in (95, 30, 10)}
    assert image_stats(lossless)["blockiness"] == pytest.approx(1.0, abs=0.05)
    assert scores[95] < 1.1
    assert scores[95] < scores[30] < scores[10]
    assert scores[10] > 1.5


def test_blockiness_of_a_small_or_flat_image_is_neutral() -> None:
    assert blockiness(torch.rand(10, 10)) == 1.0  # under two blocks a side
    assert blockiness(torch.zeros(64, 64)) == 1.0  # no steps at all


def methane(bond: float = 1.09) -> tuple[torch.Tensor, torch.Tensor]:
    """CH4 with four equal C-H bonds (tetrahedral)."""
    d = bond / math.sqrt(3)
    pos = torch.tensor([[0, 0, 0], [d, d, d], [d, -d, -d], [-d, d, -d], [-d, -d, d]])
    return torch.tensor([6, 1, 1, 1, 1]), pos.float()


def test_h_bond_spread_is_zero_for_equal_bonds_and_rises_with_noise() -> None:
    z, pos = methane()
    assert molecule_stats(z, pos, ELEMENTS)["h_bond_spread"] == pytest.approx(0.0, abs=1e-6)
    gen = torch.Generator().manual_seed(0)
    spreads = [
        molecule_stats(z, pos + 0.05 * torch.randn(pos.shape, generator=gen), ELEMENTS)[
            "h_bond_spread"
        ]
        for _ in range(20)
    ]
    assert float(np.mean(spreads)) > 0.02


def test_h_bond_spread_ignores_rotation_and_translation() -> None:
    z, pos = methane()
    pos = pos.clone()
    pos[1] *= 1.05  # one longer bond, so the spread is not zero
    rot = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)))[0]
    moved = pos @ rot.T + torch.tensor([10.0, -3.0, 7.0])
    a = molecule_stats(z, pos, ELEMENTS)["h_bond_spread"]
    assert a > 0.01
    assert molecule_stats(z, moved, ELEMENTS)["h_bond_spread"] == pytest.approx(a, abs=1e-5)


def test_h_bond_spread_needs_two_hydrogens() -> None:
    water_like = torch.tensor([8, 1]), torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0]])
    assert molecule_stats(*water_like, ELEMENTS)["h_bond_spread"] == 0.0
    single = torch.tensor([6]), torch.zeros(1, 3)
    assert molecule_stats(*single, ELEMENTS)["h_bond_spread"] == 0.0
