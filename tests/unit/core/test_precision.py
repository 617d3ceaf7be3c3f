"""train.core.trainer.cpu_precision: bf16 autocast only where the CPU has bfloat16 units."""

import pytest

from train.core import trainer


@pytest.mark.parametrize(("units", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_bf16_mixed_falls_back_to_float32_on_a_cpu_without_bf16_units(monkeypatch, units, expected):
    monkeypatch.setattr(trainer, "bf16_units", lambda: units)
    assert trainer.cpu_precision("bf16-mixed", "cpu") == expected
    assert trainer.cpu_precision("32-true", "cpu") == "32-true"
    assert trainer.cpu_precision("bf16-mixed", "gpu") == "bf16-mixed"  # not the CPU's business
    assert trainer.cpu_precision(None, "cpu") is None


def test_the_trainer_runs_under_the_resolved_precision(monkeypatch, tmp_path):
    from tests.conftest import tiny_cfg

    monkeypatch.setattr(trainer, "bf16_units", lambda: False)
    cfg = tiny_cfg("flowers_cnn", tmp_path, "trainer.precision=bf16-mixed")
    assert trainer.make_trainer(cfg).precision == "32-true"
