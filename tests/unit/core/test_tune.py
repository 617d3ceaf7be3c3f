"""train/tune.py: a real Optuna study over the real MUTAG objective, trial 0 at the defaults, and
an objective that never reads the test fold."""

import json

import pytest
import torch
import yaml

from train import tune
from train.core.registry import experiment_config
from train.graph.data import load_tu
from train.graph.graph import stratified_folds, tuning_splits


def test_the_study_s_fits_never_see_the_test_fold(data_root):
    y = load_tu("MUTAG", data_root, None).y
    folds = stratified_folds(y, 10, 42)
    splits = tuning_splits(y, 10, 5, 42)
    assert len(splits) == 5
    again = tuning_splits(y, 10, 5, 42, repeat=1)  # a recheck's other parts, same fold 0 out
    assert [v.tolist() for _, v in again] != [v.tolist() for _, v in splits]
    assert not set(torch.cat([v for _, v in again]).tolist()) & set(folds[0].tolist())
    test = set(folds[0].tolist())
    pool = set(torch.cat(folds[1:]).tolist())
    seen_val: list[int] = []
    for train_idx, val_idx in splits:
        t, v = set(train_idx.tolist()), set(val_idx.tolist())
        assert not (t | v) & test
        assert not t & v and t | v == pool
        seen_val += val_idx.tolist()
    assert sorted(seen_val) == sorted(pool)  # every pooled graph validates exactly once
    # stratified: each part's share of mutagenic graphs is within one graph of the pool's
    share = y[list(pool)].float().mean()
    for _, val_idx in splits:
        assert abs(y[val_idx].float().mean() - share) * len(val_idx) <= 1.0


def test_every_study_names_real_keys_and_a_known_direction():
    for path in sorted(tune.STUDIES.glob("*.yaml")):
        spec = tune.study_spec(path.stem)
        assert spec["direction"] in ("maximize", "minimize"), path
        start = tune.defaults(spec["experiment"], spec["space"])  # raises on a key not there
        assert set(start) == set(spec["space"]), path


@pytest.fixture
def tiny_study(tmp_path, monkeypatch):
    spec = tune.study_spec("mutag_gcn")
    spec["overrides"] += ["trainer.max_epochs=2", "data.tune_folds=2", "data.batch_size=64"]
    spec["space"].pop("data.batch_size")
    spec["recheck"] = {"top": 1, "repeats": 1}
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "mutag_tiny.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setattr(tune, "STUDIES", studies)
    return tmp_path / "results"


def test_a_study_starts_at_the_defaults_and_records_every_trial(tiny_study):
    result = tune.run_study("mutag_tiny", trials=3, out=tiny_study)
    written = json.loads((tiny_study / "mutag_tiny.json").read_text())
    assert written == result
    assert [t["number"] for t in result["trials"]] == [0, 1, 2]
    assert result["trials"][0]["params"] == result["default"]["params"]
    assert result["default"]["params"]["optim.lr"] == experiment_config("mutag_gcn").optim.lr
    assert len({json.dumps(t["params"], sort_keys=True) for t in result["trials"]}) == 3
    done = [t for t in result["trials"] if t["state"] == "complete"]
    assert all(0.0 <= t["value"] <= 1.0 for t in done)
    assert all(set(t["steps"]) == {"0", "1"} for t in done)  # one report per fit
    assert result["best"]["value"] == max(t["value"] for t in done)
    assert result["gain"] == round(result["best"]["value"] - result["default"]["value"], 4)
    # the recheck scored the defaults and the best trial once more, and chose by the mean
    rows = result["recheck"]["trials"]
    assert rows[0]["number"] == 0 and rows[0]["values"][0] == result["default"]["value"]
    assert all(len(r["values"]) == 2 for r in rows) and len(rows) <= 2
    assert result["chosen"]["mean"] == max(r["mean"] for r in rows)
