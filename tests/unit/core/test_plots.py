"""Training plots (train/core/plots.py, Curves in train/core/trainer.py): the PNGs and the CSV a
tiny run writes beside metrics.json, and their W&B media when the W&B logger is on."""

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import GRAPH_MODELS, ROOT, tiny_cfg
from train.core.plots import plot_curves, plot_parity
from train.core.registry import experiment_config, spec


def assert_plot(path: Path) -> None:
    """A PNG that decodes, of a plot's size, with something drawn on it."""
    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 400 and im.height >= 300, path
        # A blank canvas has one colour; lines, text and anti-aliasing give hundreds.
        colours = im.convert("RGB").getcolors(maxcolors=4096)
        assert colours is None or len(colours) > 50, path


def read_curves(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_a_tiny_run_writes_curves_and_confusion(tiny_artifacts, name):
    """The graph models' tiny runs (archive.yaml `tiny`): one curve row per epoch of the final
    fit, the loss and validation accuracy in each, and both PNGs."""
    art = tiny_artifacts / name
    for png in ("curves.png", "confusion.png"):
        assert_plot(art / png)
    epochs = tiny_cfg(spec(name).experiment, tiny_artifacts, *spec(name).tiny).trainer.max_epochs
    rows = read_curves(art / "curves.csv")
    assert [r["epoch"] for r in rows] == list(range(epochs))
    for row in rows:
        assert row["train_loss"] > 0 and row["val_loss"] > 0 and 0 <= row["val_acc"] <= 1


def test_curves_leave_gaps_and_parity_draws_both_panels(tmp_path):
    history = [{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.5, "val_mae": 40.0}]
    plot_curves(history, "tiny", tmp_path / "curves.png")
    assert_plot(tmp_path / "curves.png")
    true = torch.linspace(-400.0, -100.0, 50, dtype=torch.float64)
    ref = true + torch.randn(50, dtype=torch.float64)
    plot_parity(true + 0.01 * torch.randn(50), true, ref, "tiny", tmp_path / "parity.png")
    assert_plot(tmp_path / "parity.png")


@pytest.mark.slow
def test_the_wandb_run_gets_the_plots_as_media(tmp_path, monkeypatch):
    """A tiny Cora run with the default W&B logger, offline: its PNGs are the run's images."""
    from hydra.utils import get_method

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = experiment_config(
        "cora_gcn",
        "trainer=tiny",
        f"paths.artifacts={tmp_path / 'art'}",
        f"paths.logs={tmp_path / 'logs'}",
        f"paths.data={ROOT / 'data'}",
    )
    assert cfg.logger._target_.endswith("WandbLogger")
    get_method(cfg.runner)(cfg)
    [run] = (tmp_path / "logs" / "wandb").glob("offline-run-*")
    media = sorted(p.name.split("_")[0] for p in (run / "files" / "media" / "images").iterdir())
    assert media == ["confusion", "curves"]
