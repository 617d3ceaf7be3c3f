"""The model metrics every handler emits through TorchServe's custom metrics API.

Each batch, after its answers are made, `ModelMetrics.record` asks the handler's `observe` hook
what the inputs and answers were (sizes, labels, probabilities, energies) and adds them to the
metrics declared in the repo's metrics.yaml (`model_metrics`), with the dimensions ModelName and
ModelVersion. With `metrics_mode=prometheus` TorchServe exports them on :8082/metrics
(docs/monitoring.md lists them). Counters are summed over the batch before they are emitted:
the worker sends every update to the frontend as one log line, so one line per metric and
batch keeps the cost flat in the batch size.

Metrics never fail a request: an error here is logged and the answers go out unchanged.
"""

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from request_error import RequestError
from ts.metrics.metric_type_enum import MetricTypes

import contract

log = logging.getLogger(__name__)

# The switch `make bench-metrics` flips: "0", "off" or "false" turns every handler's emission
# off, whatever its model-config says (read once, at initialize).
ENV_SWITCH = "BUNDLE_MODEL_METRICS"

INPUTS = "bundle_inputs_total"
PREDICTIONS = "bundle_predictions_total"
NODES = "bundle_input_nodes_total"
EDGES = "bundle_input_edges_total"
ATOMS = "bundle_input_atoms_total"
TOKENS = "bundle_input_tokens_total"
PIXELS = "bundle_input_pixels_total"
BYTES = "bundle_input_bytes_total"
ERRORS = "bundle_request_errors_total"
TOP1 = "bundle_top1_probability"
ENERGY_PER_ATOM = "bundle_energy_per_atom_ev"
MAX_FORCE = "bundle_max_force_norm_ev_per_angstrom"

# Every histogram observation is a log line of its own: at most this many per metric and batch,
# spread evenly over the batch's values (a Cora request answers thousands of nodes).
MAX_OBSERVATIONS = 16

# The Field dimension takes the field names of the contract and of the base handler only:
# a field named after a client's own key (a duplicate key, a form field, a v2 tensor name)
# would give every client a new series, and could carry the ',' and ':' that the worker's
# metric line uses as separators.
BASE_FIELDS = {
    "body", "Content-Type", "Content-Length", "instances", "inputs", "parameters", "model",
    "X-Forces", "X-TopK", "data", "file", "image", "xyz", "topk", "other",
}  # fmt: skip
KNOWN_FIELDS = BASE_FIELDS | {
    name
    for cls in vars(contract).values()
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct) and cls is not msgspec.Struct
    for name in cls.__struct_fields__
}
_INDEX = re.compile(r"\[\d+\]")


@dataclass
class Observed:
    """What one batch's inputs and answers tell the metrics (a handler's `observe` hook)."""

    # Counter name -> its increment for the batch (input sizes).
    sizes: dict[str, float] = field(default_factory=dict)
    # Classifiers: the label and its probability of each answer.
    labels: list[str] = field(default_factory=list)
    top1: list[float] = field(default_factory=list)
    # Histogram name -> this batch's observations.
    values: dict[str, list[float]] = field(default_factory=dict)


def error_field(name: str) -> str:
    """The Field dimension of an error: its top-level field without indices, or "other"."""
    parts = _INDEX.sub("", name).split(".")
    if parts[0] == "instances" and len(parts) > 1:
        parts = parts[1:]
    return parts[0] if parts[0] in KNOWN_FIELDS else "other"


def spread(values: list[float], k: int = MAX_OBSERVATIONS) -> list[float]:
    """At most k of `values`, evenly spaced, in order."""
    n = len(values)
    return values if n <= k else [values[i * n // k] for i in range(k)]


def switched_on(configured: Any) -> bool:
    """The model-config's `metrics` flag, unless BUNDLE_MODEL_METRICS turns it off."""
    env = os.environ.get(ENV_SWITCH, "").strip().lower()
    return bool(configured) and env not in ("0", "off", "false", "no")


class ModelMetrics:
    """One worker's emitter: the context's metrics cache and the model's name and version."""

    def __init__(self, context: Any, enabled: bool = True) -> None:
        self.cache: Any = getattr(context, "metrics", None)
        model = (getattr(context, "manifest", None) or {}).get("model") or {}
        self.dims = [str(model.get("modelName", "")), str(model.get("modelVersion", ""))]
        self.enabled = switched_on(enabled) and self.cache is not None
        self.missing: set[str] = set()

    def record(self, handler: Any, batch: dict[str, Any]) -> None:
        """Emits one batch's metrics; never raises (a failure is logged once per cause)."""
        if not self.enabled:
            return
        try:
            items = handler.flat(batch["good"])
            observed = handler.observe(items, batch["outputs"]) if items else Observed()
            self.emit(len(items), observed, batch["errors"].values())
        except Exception as e:  # noqa: BLE001 - metrics must never fail the answers
            if type(e).__name__ not in self.missing:
                self.missing.add(type(e).__name__)
                log.exception("model metrics not recorded for this batch")

    def emit(self, inputs: int, observed: Observed, errors: Iterable[RequestError]) -> None:
        """Adds a batch's counts and observations to TorchServe's metrics."""
        if inputs:
            self.add(INPUTS, MetricTypes.COUNTER, inputs)
        for name, total in observed.sizes.items():
            self.add(name, MetricTypes.COUNTER, total)
        for label, count in Counter(observed.labels).items():
            self.add(PREDICTIONS, MetricTypes.COUNTER, count, label)
        for p in spread(observed.top1):
            self.add(TOP1, MetricTypes.HISTOGRAM, p)
        for name, values in observed.values.items():
            for v in spread(values):
                self.add(name, MetricTypes.HISTOGRAM, v)
        by_cause = Counter((error_field(e.field), str(e.code)) for e in errors)
        for (name, code), count in by_cause.items():
            self.add(ERRORS, MetricTypes.COUNTER, count, name, code)

    def add(self, name: str, kind: MetricTypes, value: float, *dims: str) -> None:
        """One update of a declared metric; an undeclared one is skipped (and logged once)."""
        try:
            metric = self.cache.get_metric(name, kind)
        except Exception:  # noqa: BLE001 - MetricsCacheKeyError: not in metrics.yaml
            if name not in self.missing:
                self.missing.add(name)
                log.warning("metric %s (%s) is not declared in metrics.yaml", name, kind.value)
            return
        # The frontend parses the value with [0-9.e-]: no "+" of a large float's exponent.
        value = value if isinstance(value, int) else round(value, 6)
        metric.add_or_update(value, [*self.dims, *dims])
