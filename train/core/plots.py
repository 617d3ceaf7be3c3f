"""The PNGs every training run writes beside metrics.json (matplotlib, Agg: no display).

- curves.png: the training loss and the validation metrics per epoch (train.core.trainer.Curves);
- confusion.png: a classifier's test confusion matrix;
- parity.png: QM9's predicted against true energy on the test molecules.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, whatever DISPLAY says), imported
    when a plot is drawn: importing the trainer does not load matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)


def plot_curves(
    history: Sequence[dict[str, float]],
    title: str,
    path: Path,
    steps: Sequence[tuple[float, float]] = (),
) -> None:
    """Per-epoch losses (left) and the other validation metrics (right), from `history` rows
    ({"epoch": 0, "train_loss": ..., "val_acc": ...}), plotted at the end of their epoch; a
    metric missing from a row is a gap. `steps`, (epochs done, loss) of each training step,
    is drawn faintly under the losses when epochs have more than one step."""
    keys = sorted({k for row in history for k in row if k != "epoch"})
    losses = [k for k in keys if k.endswith("_loss")]
    metrics = [k for k in keys if k not in losses]
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = [("loss", losses)] + ([("validation metric", metrics)] if metrics else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.6), dpi=110)
    axes = list(getattr(axes, "flat", [axes]))
    if len(steps) > len(history):
        x, y = zip(*steps)
        axes[0].plot(x, y, lw=0.6, alpha=0.35, color="grey", label="train_loss (step)")
    for ax, (ylabel, names) in zip(axes, panels):
        for name in names:
            rows = [r for r in history if name in r]
            x, y = [r["epoch"] + 1 for r in rows], [r[name] for r in rows]
            ax.plot(x, y, marker="." if len(rows) <= 40 else None, label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}: {len(history)} epochs", fontsize=9)
    _save(fig, path)


def plot_confusion(result: dict[str, Any], classes: list[str], title: str, path: Path) -> None:
    """The test confusion matrix of train.core.scores.scores (rows true, columns predicted)."""
    plt = _pyplot()
    m = torch.tensor(result["confusion"])
    side = max(4.6, 2.6 + 0.6 * len(classes))  # room for the class names of Cora's seven
    fig, ax = plt.subplots(figsize=(side + 0.6, side), dpi=120)
    rows = m.sum(1, keepdim=True).clamp(min=1)  # a class absent from a tiny test set: a zero row
    ax.imshow((m / rows).numpy(), cmap="Blues", vmin=0, vmax=1)
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
    ax.set_xticks(range(len(classes)), classes, rotation=35, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    lo, hi = result["acc_ci95"]
    ax.set_title(
        f"{title}: test acc {result['acc']:.3f} (95% CI {lo:.3f}-{hi:.3f}, n={result['n']})",
        fontsize=8,
    )
    _save(fig, path)


def plot_parity(
    pred: torch.Tensor, true: torch.Tensor, ref: torch.Tensor, title: str, path: Path
) -> None:
    """Predicted against true energy (eV), total U0 (left) and U0 minus the per-element
    reference (right): the totals span thousands of eV, so only the right shows the errors."""
    plt = _pyplot()
    mae_mev = float((pred - true).abs().mean()) * 1000
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.4), dpi=110)
    for ax, (x, y, label) in zip(
        axes, [(true, pred, "U0"), (true - ref, pred - ref, "U0 - per-element reference")]
    ):
        lo, hi = float(torch.min(x.min(), y.min())), float(torch.max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="predicted = true")
        ax.scatter(x.numpy(), y.numpy(), s=6, alpha=0.6)
        ax.set_xlabel(f"true {label} (eV)")
        ax.set_ylabel(f"predicted {label} (eV)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{title}: test MAE {mae_mev:.1f} meV, n={len(true)}", fontsize=9)
    _save(fig, path)
