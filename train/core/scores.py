"""Classifier scores shared by the families: accuracy with its interval, confusion, its plot."""

from pathlib import Path
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


def plot_confusion(result: dict[str, Any], classes: list[str], title: str, path: Path) -> None:
    """The test confusion matrix as a PNG beside metrics.json (rows true, columns predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = torch.tensor(result["confusion"])
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=120)
    ax.imshow((m / m.sum(1, keepdim=True)).numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                int(m[i, j]),
                ha="center",
                va="center",
                color="white" if m[i, j] > 0.5 * m[i].sum() else "black",
            )
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    lo, hi = result["acc_ci95"]
    ax.set_title(
        f"{title}: test acc {result['acc']:.3f} (95% CI {lo:.3f}-{hi:.3f}, n={result['n']})",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
