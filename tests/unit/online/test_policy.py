"""The online loop's decisions: the retrain trigger and the safety gate."""

import math

import pytest

from online.policy import retrain_trigger, safety_gate


@pytest.mark.parametrize(
    "available, trained_on, fraction, fires",
    [
        (100, 100, 0.5, False),
        (149, 100, 0.5, False),
        (150, 100, 0.5, True),  # exactly at the threshold
        (151, 100, 0.5, True),
        (32, 30, 0.1, False),
        (33, 30, 0.1, True),  # 30 * 1.1 is 33.000000000000004 in floats
        (10, 10, 0.0, True),
        (29, 10, 2.0, False),
        (30, 10, 2.0, True),
    ],
)
def test_trigger_fires_exactly_at_the_threshold(available, trained_on, fraction, fires):
    decision = retrain_trigger(available, trained_on, fraction)
    assert decision.yes is fires
    assert decision.numbers["threshold"] == pytest.approx(trained_on * (1 + fraction))
    assert ("<" in decision.reason) is not fires


def test_trigger_fires_when_nothing_was_trained():
    assert retrain_trigger(5, None, 0.5).yes


@pytest.mark.parametrize(
    "candidate, served, margin, promoted",
    [
        (100.0, 100.0, 0.05, True),
        (105.0, 100.0, 0.05, True),  # at the limit: not worse by MORE than the margin
        (105.01, 100.0, 0.05, False),
        (80.0, 100.0, 0.0, True),
        (99.0, 100.0, -0.5, False),  # a negative margin demands an improvement
        (math.nan, 100.0, 0.05, False),
        (math.inf, None, 0.05, False),
        (500.0, None, 0.05, True),
    ],
)
def test_safety_gate(candidate, served, margin, promoted):
    decision = safety_gate(candidate, served, margin)
    assert decision.yes is promoted
    assert ("not promoted" in decision.reason) is not promoted
    assert decision.as_dict()["numbers"]["candidate_val_mae_mev"] == candidate or math.isnan(
        candidate
    )
