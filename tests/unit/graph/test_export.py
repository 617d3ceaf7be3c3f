"""Exported TorchScript files load in a fresh process that never imports train/, and match eager."""

import json
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate
from torch_geometric.loader import DataLoader

from tests.conftest import mirror
from train.graph.data import load_planetoid, load_tu

pytestmark = pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")

FRESH = """
import sys, torch
inputs, expected = torch.load(sys.argv[2])
model = torch.jit.load(sys.argv[1])
with torch.no_grad():
    torch.testing.assert_close(model(*inputs), expected)
assert not [m for m in sys.modules if m == "train" or m.startswith("train.")], "train imported"
print("parity ok", tuple(expected.shape))
"""


def _eager(art_dir, in_dim, num_classes):
    meta = json.loads((art_dir / "meta.json").read_text())
    net = instantiate(meta["model_cfg"], in_dim=in_dim, num_classes=num_classes)
    net.load_state_dict(torch.load(art_dir / "state_dict.pt"))
    return net.eval(), meta


@pytest.mark.parametrize("name", ["cora_gcn", "cora_gat", "mutag_gcn"])
def test_scripted_file_matches_eager_in_fresh_process(name, tiny_artifacts, data_root, tmp_path):
    if name.startswith("cora"):
        ds = load_planetoid("Cora", data_root, mirror())
        inputs = (ds[0].x, ds[0].edge_index)
    else:
        ds = load_tu("MUTAG", data_root, mirror())
        batch = next(iter(DataLoader(ds[:32], batch_size=32)))
        inputs = (batch.x, batch.edge_index, batch.batch)
    art = tiny_artifacts / name
    net, meta = _eager(art, ds.num_features, ds.num_classes)
    assert meta["feature_dim"] == ds.num_features and len(meta["labels"]) == ds.num_classes
    with torch.no_grad():
        expected = net(*inputs)
    torch.save((inputs, expected), tmp_path / "io.pt")
    # -I: isolated mode, so neither the repo nor PYTHONPATH is importable.
    proc = subprocess.run(
        [sys.executable, "-I", "-c", FRESH, str(art / "model.pt"), str(tmp_path / "io.pt")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "parity ok" in proc.stdout


def test_metrics_written_beside_artifact(tiny_artifacts):
    for name in ["cora_gcn", "cora_gat", "mutag_gcn"]:
        metrics = json.loads((tiny_artifacts / name / "metrics.json").read_text())
        assert metrics["model"] == name and 0.0 <= metrics["test_acc"] <= 1.0
    mutag = json.loads((tiny_artifacts / "mutag_gcn" / "metrics.json").read_text())
    assert mutag["cv_folds"] == 2 and len(mutag["cv_acc"]) == 2
