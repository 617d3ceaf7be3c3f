"""Held-out data under controlled shifts: the `shifts` hook of every served model.

A model's archive.yaml names `shifts: <module>.<hook>`, `hook(data_cfg, size, rng) -> ShiftSet`,
living in its family's shifts.py; models of one task share one. The hook returns `size`
labelled held-out requests as they are (`clean`) and, for each shift, a function that makes the
same requests shifted at a severity. `make robustness` (benchmarks/robustness.py) sends them
through the packaged handler in-process, scores the answers and runs the drift monitor's tests
on windows of what the payload log records.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hydra.utils import get_method

from train.core.registry import served_models, spec

JSON = "application/json"


@dataclass
class Case:
    """One request with its truth: a label index, or the energy in eV."""

    content_type: str
    body: bytes
    target: Any


def json_case(request: dict[str, Any], target: Any) -> Case:
    """A compact JSON request body and its truth."""
    return Case(JSON, json.dumps(request, separators=(",", ":")).encode(), target)


@dataclass
class Shift:
    """One kind of shift: its severities, mildest first, and `make(severity) -> [Case]`.

    `invariant` marks a transformation the model must ignore (a rotated molecule): its answers
    should not change, and the monitor should not flag it.
    """

    severities: list[float]
    make: Callable[[float], list[Case]]
    unit: str = ""
    invariant: bool = False


@dataclass
class ShiftSet:
    """A model's held-out requests and its shifts; `metric` is 'accuracy' or 'mae_mev'."""

    clean: list[Case]
    shifts: dict[str, Shift] = field(default_factory=dict)
    metric: str = "accuracy"


def shift_hooks() -> dict[str, str]:
    """Served model name -> its `shifts` hook, for every served model that names one."""
    return {name: s.shifts for name in served_models() if (s := spec(name)).shifts}


def load_hook(path: str) -> Callable[..., ShiftSet]:
    return get_method(path)
