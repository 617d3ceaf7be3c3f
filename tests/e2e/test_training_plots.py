"""Every registered model's tiny run (archive.yaml `tiny`, the runs the e2e servers serve)
writes its plots beside metrics.json: curves for every fit, a confusion matrix for each
classifier, QM9's parity plot."""

import json

import pytest

from tests.unit.core.test_plots import assert_plot, read_curves
from train.core.registry import served_models

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# imdb_bert_int8 quantizes imdb_bert's weights: it fits nothing, so it has no curves.
NO_FIT = {"imdb_bert_int8"}


@pytest.mark.parametrize("name", served_models())
def test_every_tiny_run_writes_its_plots(tiny_run, name):
    root, cfg = tiny_run(name)
    art = root / name
    classifier = "labels" in json.loads((art / "meta.json").read_text())
    assert_plot(art / ("confusion.png" if classifier else "parity.png"))
    assert not (art / ("parity.png" if classifier else "confusion.png")).exists()
    if name in NO_FIT:
        assert not (art / "curves.png").exists()
        return
    assert_plot(art / "curves.png")
    rows = read_curves(art / "curves.csv")
    assert [r["epoch"] for r in rows] == list(range(cfg.trainer.max_epochs))
    assert all(r["train_loss"] > 0 for r in rows)
