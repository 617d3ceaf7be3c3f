"""The loop's two decisions, as pure functions: when to retrain, and whether to promote."""

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Optional


@dataclass
class Decision:
    """A yes/no with its reason and the numbers it was made on (logged as JSON)."""

    yes: bool
    reason: str
    numbers: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def retrain_trigger(available: int, trained_on: Optional[int], fraction: float) -> Decision:
    """Retrain when available >= trained_on * (1 + fraction), or when nothing is served yet.

    Exact rational arithmetic: 0.1 of 30 molecules is 3, not 3.0000000000000004, so the trigger
    fires exactly at the threshold and never one molecule early or late.
    """
    numbers = {"available": available, "trained_on": trained_on, "fraction": fraction}
    if trained_on is None:
        return Decision(True, "no model has been trained yet", numbers)
    threshold = Fraction(trained_on) * (1 + Fraction(str(fraction)))
    numbers["threshold"] = float(threshold)
    if available >= threshold:
        return Decision(True, f"{available} molecules >= threshold {float(threshold):g}", numbers)
    return Decision(False, f"{available} molecules < threshold {float(threshold):g}", numbers)


def safety_gate(
    candidate_val_mae: float, served_val_mae: Optional[float], margin_frac: float
) -> Decision:
    """Promote unless the candidate's val MAE is worse than the served one's by > margin_frac."""
    numbers = {
        "candidate_val_mae_mev": candidate_val_mae,
        "served_val_mae_mev": served_val_mae,
        "margin_frac": margin_frac,
    }
    if not math.isfinite(candidate_val_mae):
        return Decision(False, f"val MAE is {candidate_val_mae}: not promoted", numbers)
    if served_val_mae is None:
        return Decision(True, "nothing is served: the first version is promoted", numbers)
    limit = served_val_mae * (1 + margin_frac)
    numbers["limit_mev"] = limit
    if candidate_val_mae > limit:
        return Decision(
            False,
            f"val MAE {candidate_val_mae:.2f} meV is worse than the served {served_val_mae:.2f} "
            f"meV by more than {margin_frac:.0%} (limit {limit:.2f} meV): not promoted",
            numbers,
        )
    return Decision(
        True, f"val MAE {candidate_val_mae:.2f} meV within limit {limit:.2f} meV", numbers
    )


def realised_trigger(
    assessments: list[dict[str, Any]],
    served_val_mae: Optional[float],
    bound_mev: Optional[float],
    bound_frac: Optional[float],
) -> Decision:
    """Retrain when the served version's realised MAE on a shard that arrived since it was
    trained (online/assess.py) is above a bound: `bound_mev`, or its own val MAE times
    (1 + `bound_frac`); the lower one counts, and None turns a bound off."""
    limits = [float(bound_mev)] if bound_mev is not None else []
    if bound_frac is not None and served_val_mae is not None:
        limits.append(served_val_mae * (1 + bound_frac))
    numbers: dict[str, Any] = {
        "bound_mev": bound_mev,
        "bound_frac": bound_frac,
        "served_val_mae_mev": served_val_mae,
    }
    if not limits:
        return Decision(False, "no realised-MAE bound is set", numbers)
    if not assessments:
        return Decision(False, "no shard has arrived since the served version", numbers)
    limit = min(limits)
    worst = max(assessments, key=lambda a: a["mae_mev"])
    numbers.update(limit_mev=limit, shard=worst["shard"], realised_mae_mev=worst["mae_mev"])
    if worst["mae_mev"] > limit:
        return Decision(
            True,
            f"realised MAE {worst['mae_mev']:.1f} meV on {worst['shard']} > {limit:.1f} meV",
            numbers,
        )
    return Decision(
        False, f"realised MAE at most {worst['mae_mev']:.1f} meV <= {limit:.1f} meV", numbers
    )


def drift_trigger(assessments: list[dict[str, Any]]) -> Decision:
    """Retrain when the drift tests flagged a shard that arrived since the served version was
    trained, against that version's reference (online/assess.py)."""
    tested = [a for a in assessments if a.get("drift")]
    hits = [a for a in tested if a["drift"]["flagged"]]
    numbers = {
        "tested": [a["shard"] for a in tested],
        "flagged": {a["shard"]: a["drift"]["drifted"] for a in hits},
    }
    if hits:
        names = ", ".join(f"{a['shard']} ({', '.join(a['drift']['drifted'])})" for a in hits)
        return Decision(True, f"drift in {names}", numbers)
    if not tested:
        return Decision(False, "no shard's drift was tested since the served version", numbers)
    return Decision(False, f"no drift in {len(tested)} shard(s)", numbers)


def combine(decisions: dict[str, Decision]) -> Decision:
    """One retrain decision from named triggers: yes when any fired; `fired_by` names them."""
    fired = [name for name, d in decisions.items() if d.yes]
    reason = "; ".join(decisions[n].reason for n in fired) or "; ".join(
        d.reason for d in decisions.values()
    )
    numbers = {"fired_by": fired, **{name: d.as_dict() for name, d in decisions.items()}}
    return Decision(bool(fired), reason, numbers)
