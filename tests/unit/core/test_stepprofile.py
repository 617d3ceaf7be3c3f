"""make profile-train (train/profile_train.py): a real torch.profiler trace of a real model's
training steps, its top ops, and a fit that stops once they are recorded."""

import json

from train import profile_train


def test_a_profiled_fit_records_its_steps_then_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(profile_train, "TRACES", tmp_path / "traces")
    art = tmp_path / "artifacts"
    result = profile_train.profile_training(
        "mutag_gcn", "trainer.max_epochs=50", f"paths.artifacts={art}", wait=1, active=3
    )
    out = tmp_path / "traces" / "mutag_gcn"
    assert json.loads((out / "top_ops.json").read_text())["top"] == result["top"]
    trace = json.loads((out / "trace.json").read_text())
    assert any(e.get("name") == "aten::addmm" for e in trace["traceEvents"])
    # 1 skipped + 1 warm-up + 3 recorded steps, of the 50 epochs (5 steps each) asked for
    assert result["stopped_after_steps"] == 5 and result["active_steps"] == 3
    assert result["step_ms"] > 0 and result["self_cpu_ms_per_step"] > 0
    ops = [op["op"] for op in result["top"]]
    assert len(ops) == len(set(ops)) and "aten::mm" in ops  # the GCN layers' Linear
    shares = [op["share"] for op in result["top"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.001
    assert result["overrides"][:2] == ["data.cv_runs=0", "trainer.max_epochs=50"]
    # the fit stopped at the end of its first epoch (the curves have one row), not after 50
    assert len((art / "curves.csv").read_text().splitlines()) == 1 + 1
