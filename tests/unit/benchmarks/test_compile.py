"""make bench-compile (benchmarks/compile.py): every form it times is the same trained model."""

import json

import pytest
import torch
from torch_geometric.loader import DataLoader

from benchmarks import compile as bench
from benchmarks import compile_forms as forms
from tests.conftest import mirror
from train.graph.data import load_planetoid, load_tu

pytestmark = pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")


@pytest.mark.parametrize("name", ["cora_gcn", "mutag_gcn"])
def test_the_rebuilt_eager_model_and_int8_answer_as_the_served_file(
    name, tiny_artifacts, data_root, tmp_path, monkeypatch
):
    monkeypatch.setattr(forms, "ARTIFACTS", tiny_artifacts)
    if name == "cora_gcn":
        g = load_planetoid("Cora", data_root, mirror())[0]
        inputs = (g.x, g.edge_index)
    else:
        b = next(iter(DataLoader(load_tu("MUTAG", data_root, mirror())[:8], batch_size=8)))
        inputs = (b.x, b.edge_index, b.batch)
    assert forms.rebuildable(name)
    scripted, _ = forms.build("torchscript", name, tmp_path, inputs)
    eager, _ = forms.build("eager", name, tmp_path, inputs)
    int8, extra = forms.build("int8", name, tmp_path, inputs)
    with torch.inference_mode():
        expected = scripted(*inputs)
        torch.testing.assert_close(eager(*inputs), expected)
        # int8 weights move the logits a little, not the answers of a confident model
        close = (int8(*inputs).argmax(-1) == expected.argmax(-1)).float().mean()
    assert close > 0.9
    assert 0.0 < extra["linear_share_eager"] < 1.0


def test_merge_keeps_the_other_models_figures_with_the_run_that_measured_them(
    tmp_path, monkeypatch
):
    earlier = {
        "command": "python -m benchmarks.compile --seconds 1",
        "machine": {"cpu": "then"},
        "finished": "2026-12-04 10:00:00 UTC",
        "models": [
            {"model": "cora_gcn", "metric": "accuracy", "forms": {"eager": {"error": "old"}}},
            {"model": "imdb_bert", "metric": "accuracy", "forms": {"eager": {"error": "old"}}},
        ],
    }
    (tmp_path / "compile.json").write_text(json.dumps(earlier))
    monkeypatch.setattr(
        bench,
        "run_model",
        lambda m, *_: {"model": m, "metric": "accuracy", "forms": {"eager": {"error": "new"}}},
    )
    bench.main(["--models", "imdb_bert", "--merge", "--out", str(tmp_path)])
    rows = {r["model"]: r for r in json.loads((tmp_path / "compile.json").read_text())["models"]}
    assert rows["imdb_bert"]["forms"]["eager"]["error"] == "new"
    assert "run" not in rows["imdb_bert"]
    assert rows["cora_gcn"]["forms"]["eager"]["error"] == "old"
    assert rows["cora_gcn"]["run"]["command"] == earlier["command"]
    assert "imdb_bert" in (tmp_path / "compile.md").read_text()


def test_an_exception_without_text_is_still_named():
    assert bench.message(StopIteration()) == "StopIteration"
    assert bench.message(ValueError("bad\nmore")) == "ValueError: bad"


def test_an_output_of_another_shape_is_flagged_not_compared():
    logits = torch.zeros(4, 2)
    assert forms.max_abs_diff(logits + 0.5, logits) == 0.5
    assert forms.max_abs_diff((logits[:1],), (logits,)) is None  # a batch-1 specialised export
    assert forms.max_abs_diff([logits, logits], [logits]) is None
