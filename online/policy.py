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
