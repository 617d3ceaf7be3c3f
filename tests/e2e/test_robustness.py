"""`make robustness` on the session's tiny .mar files: one model per family, a small held-out
sample, the real handlers, payload log and drift tests. Checks the pipeline and the properties
that hold for any trained model; the figures of docs/robustness.md come from the full models."""

import json
import subprocess
import sys

import pytest

from serve.config import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODELS = ["mutag_gcn", "qm9_et", "imdb_bert", "flowers_cnn"]


def robustness(store, out, *models: str, update: bool = False) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.robustness", "--store", str(store)]
    cmd += ["--models", *models, "--size", "40", "--windows", "4", "--out", str(out), "--no-doc"]
    done = subprocess.run(
        [*cmd, *(["--update"] if update else [])], cwd=ROOT, capture_output=True, timeout=900
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def results_file(every_model_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("robustness") / "robustness.json"
    robustness(every_model_store, out, *MODELS)
    return out


@pytest.fixture(scope="module")
def results(results_file):
    return {r["model"]: r for r in json.loads(results_file.read_text())["models"]}


def test_update_reruns_one_model_and_keeps_the_others(every_model_store, results_file, results):
    """A model's figures depend on its .mar and the seed alone: rerun, they are the same."""
    merged = robustness(every_model_store, results_file, "mutag_gcn", update=True)
    assert [r["model"] for r in merged["models"]] == sorted(MODELS)
    again = {r["model"]: r for r in merged["models"]}
    assert again["mutag_gcn"]["clean"] == results["mutag_gcn"]["clean"]
    assert again["mutag_gcn"]["shifts"] == results["mutag_gcn"]["shifts"]
    assert again["qm9_et"] == results["qm9_et"]
    assert len(merged["runs"]) == 2 and "--update" in merged["runs"][1]


def test_every_model_answers_every_clean_and_shifted_request(results):
    assert sorted(results) == sorted(MODELS)
    for name, r in results.items():
        assert r["clean"]["failed"] == 0, name
        assert r["clean"]["window"] == 20 and r["clean"]["windows"] == 4  # 40 (MUTAG 38) // 2
        assert len(r["shifts"]) >= 12 and {s["level"] for s in r["shifts"]} == {1, 2, 3}
        for s in r["shifts"]:
            assert s["failed"] == 0, (name, s)
            if s["shift"] == "non_review" and s["severity"] == 1.0:
                assert s["scored"] == 0  # no request is a review: nothing to score
            else:
                assert s[r["metric"]] is not None and s["scored"] > 0, (name, s)
            assert 0.0 <= s["flagged"] <= 1.0


def test_the_monitor_flags_a_gross_input_shift(results):
    """As many random bonds again as a molecule has: the degree test flags every window."""
    masked = next(
        s for s in results["mutag_gcn"]["shifts"] if s["shift"] == "edge_add" and s["level"] == 3
    )
    assert masked["flagged"] == 1.0 and masked["signals"]["degree"] == 4  # mean degree doubles


def test_rotating_or_moving_a_molecule_leaves_its_energy(results):
    """The Equivariant Transformer's energy is invariant: the MAE does not move."""
    r = results["qm9_et"]
    for s in r["shifts"]:
        if s["invariant"]:
            assert s["mae_mev"] == pytest.approx(r["clean"]["mae_mev"], abs=1.0), s
