"""trainer=ddp: mutag_gcn trains in two CPU processes (Lightning strategy=ddp, gloo), and rank
zero alone scores and exports a model that loads and answers."""

import json
import subprocess
import sys

import pytest
import torch
from torch_geometric.loader import DataLoader

from tests.conftest import ROOT, mirror
from train.graph.data import load_tu

needs_mirror = pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")


@needs_mirror
def test_mutag_trains_in_two_processes_and_rank_zero_exports(tmp_path, data_root):
    art = tmp_path / "mutag_gcn"
    run = subprocess.run(
        [sys.executable, "-m", "train", "experiment=mutag_gcn", "trainer=ddp"]
        + ["trainer.max_epochs=2", "data.cv_runs=1", "logger=none"]
        + [f"paths.artifacts={art}", f"paths.data={data_root}", f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log and "distributed_backend=gloo" in log
    # Rank one returns before writing anything; its runner says which rank it was.
    assert '"global_rank": 1' in run.stdout
    metrics = json.loads((art / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["cv_folds"] == 1
    assert 0.0 <= metrics["test_acc"] <= 1.0
    model = torch.jit.load(str(art / "model.pt"))
    graphs = load_tu("MUTAG", data_root, mirror())[:8]
    b = next(iter(DataLoader(graphs, batch_size=8)))
    with torch.no_grad():
        logits = model(b.x, b.edge_index, b.batch)
    assert logits.shape == (8, 2) and torch.isfinite(logits).all()
    assert (art / "curves.csv").is_file() and (art / "confusion.png").is_file()
