"""Data loading from the mirror: links only, never writes the mirror, real dataset statistics."""

import os
from pathlib import Path

import pytest
import torch

from tests.conftest import mirror
from train.core.mirror import link_from_mirror
from train.core.registry import experiment_config
from train.graph.data import load_planetoid, load_tu

needs_mirror = pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")


@needs_mirror
def test_link_from_mirror_symlinks_files_and_leaves_mirror_untouched(tmp_path):
    src = Path(mirror()) / "Cora" / "raw"
    before = sorted((p.name, p.stat().st_mtime) for p in src.iterdir())
    assert link_from_mirror("Cora/raw", tmp_path, mirror())
    linked = sorted((tmp_path / "Cora" / "raw").iterdir())
    assert [p.name for p in linked] == [n for n, _ in before]
    assert all(p.is_symlink() and p.resolve().parent == src.resolve() for p in linked)
    assert sorted((p.name, p.stat().st_mtime) for p in src.iterdir()) == before


def test_link_from_mirror_without_mirror_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_MIRROR", raising=False)
    assert not link_from_mirror("Cora/raw", tmp_path)
    assert not any(tmp_path.iterdir())


def test_missing_mirror_directory_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        link_from_mirror("Cora/raw", tmp_path, str(tmp_path / "nope"))


@needs_mirror
def test_cora_public_split_and_label_names(data_root):
    data = load_planetoid("Cora", data_root, mirror())[0]
    assert (data.num_nodes, data.num_features) == (2708, 1433)
    assert [int(m.sum()) for m in (data.train_mask, data.val_mask, data.test_mask)] == [
        140,
        500,
        1000,
    ]
    # Normalised rows sum to 1 (every Cora paper has at least one word).
    torch.testing.assert_close(data.x.sum(-1), torch.ones(2708))
    cfg = experiment_config("cora_gcn")
    counts = torch.bincount(data.y).tolist()
    assert counts == list(cfg.data.class_counts)
    assert len(cfg.data.labels) == len(counts)


@needs_mirror
def test_mutag_graphs_and_labels(data_root):
    ds = load_tu("MUTAG", data_root, mirror())
    assert len(ds) == 188
    assert torch.bincount(ds.y).tolist() == [63, 125]
    assert ds.num_features == 7
    assert sum(g.num_nodes for g in ds) == 3371
    assert ds[0].edge_attr.shape[1] == 4


def test_mirror_env_points_at_shared_data_in_ci():
    if os.environ.get("CI"):
        assert mirror() is not None, "CI must export DATA_MIRROR"
