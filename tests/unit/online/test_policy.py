"""The online loop's decisions: the retrain trigger and the safety gate."""

import math

import pytest

from online.policy import (
    Decision,
    combine,
    drift_trigger,
    realised_trigger,
    retrain_trigger,
    safety_gate,
)


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


def shard(name: str, mae: float, drifted: list[str] | None = None) -> dict:
    drift = None if drifted is None else {"flagged": bool(drifted), "drifted": drifted}
    return {"shard": name, "mae_mev": mae, "drift": drift}


@pytest.mark.parametrize(
    ("maes", "val", "bound_mev", "bound_frac", "fires", "limit"),
    [
        ([100.0, 130.0], 100.0, None, 0.25, True, 125.0),  # 130 > 100 x 1.25
        ([100.0, 125.0], 100.0, None, 0.25, False, 125.0),  # at the bound: no
        ([100.0], 100.0, 90.0, 0.25, True, 90.0),  # the lower bound counts
        ([100.0], 100.0, 150.0, None, False, 150.0),
    ],
)
def test_realised_trigger_fires_above_the_lower_bound(
    maes, val, bound_mev, bound_frac, fires, limit
):
    d = realised_trigger(
        [shard(f"s{i}", m) for i, m in enumerate(maes)], val, bound_mev, bound_frac
    )
    assert d.yes is fires and d.numbers["limit_mev"] == pytest.approx(limit)
    assert d.numbers["realised_mae_mev"] == max(maes)


def test_realised_trigger_needs_a_bound_and_a_shard():
    assert not realised_trigger([shard("s", 1e9)], 1.0, None, None).yes
    assert not realised_trigger([], 1.0, 0.0, 0.0).yes


def test_drift_trigger_names_the_flagged_shards():
    d = drift_trigger([shard("a", 1, []), shard("b", 1, ["h_bond_spread"]), shard("c", 1)])
    assert d.yes and d.numbers == {"tested": ["a", "b"], "flagged": {"b": ["h_bond_spread"]}}
    assert not drift_trigger([shard("a", 1, [])]).yes
    assert not drift_trigger([shard("c", 1)]).yes  # not tested is no drift


def test_combine_fires_on_any_and_names_them():
    yes, no = Decision(True, "y", {}), Decision(False, "n", {})
    both = combine({"growth": no, "realised_mae": yes, "drift": yes})
    assert both.yes and both.numbers["fired_by"] == ["realised_mae", "drift"]
    assert both.numbers["growth"] == no.as_dict()
    none = combine({"growth": no, "drift": no})
    assert not none.yes and none.numbers["fired_by"] == []
