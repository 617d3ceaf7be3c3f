"""Classifier scores: accuracy, its Wilson interval, recall per class, confusion and its PNG."""

import math

import pytest
import torch
from PIL import Image

from train.core.plots import plot_confusion
from train.core.scores import scores

CLASSES = ["a", "b", "c"]


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The textbook Wilson score interval, written out to check the library's."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_scores_count_the_confusion_and_the_interval():
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2, 2, 0])
    s = scores(pred, y, CLASSES)
    assert s["confusion"] == [[2, 1, 0], [0, 1, 1], [1, 0, 4]]
    assert s["acc"] == 0.7 and s["n"] == 10
    assert s["per_class"] == {"a": round(2 / 3, 4), "b": 0.5, "c": 0.8}
    lo, hi = wilson(7, 10)
    assert s["acc_ci95"] == [pytest.approx(lo, abs=1e-4), pytest.approx(hi, abs=1e-4)]


def test_interval_narrows_with_more_photos():
    wide = scores(torch.zeros(20, dtype=torch.long), torch.tensor([0] * 17 + [1] * 3), CLASSES)
    narrow = scores(
        torch.zeros(700, dtype=torch.long), torch.tensor([0] * 595 + [1] * 105), CLASSES
    )
    assert wide["acc"] == narrow["acc"] == 0.85
    assert narrow["acc_ci95"][1] - narrow["acc_ci95"][0] < wide["acc_ci95"][1] - wide["acc_ci95"][0]


def test_confusion_png_is_written(tmp_path):
    y = torch.tensor([0, 1, 2, 2])
    s = scores(torch.tensor([0, 2, 2, 2]), y, CLASSES)
    path = tmp_path / "confusion.png"
    plot_confusion(s, CLASSES, "tiny", path)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 300
