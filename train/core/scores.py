"""Classifier scores shared by the families: accuracy with its interval, and the confusion
matrix (its plot: train.core.plots.plot_confusion)."""

from typing import Any

import torch
from scipy.stats import binomtest
from torch import Tensor


def scores(pred: Tensor, y: Tensor, classes: list[str]) -> dict[str, Any]:
    """Accuracy with its 95% Wilson interval, recall per class, and the confusion matrix."""
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long)
    for t, p in zip(y.tolist(), pred.tolist()):
        confusion[t, p] += 1
    correct, n = int(confusion.diag().sum()), len(y)
    ci = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {
        "acc": round(correct / n, 4),
        "acc_ci95": [round(ci.low, 4), round(ci.high, 4)],
        "n": n,
        "per_class": {
            c: round(float(confusion[i, i] / confusion[i].sum()), 4) for i, c in enumerate(classes)
        },
        "confusion": confusion.tolist(),
    }
