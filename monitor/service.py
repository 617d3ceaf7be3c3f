"""The monitor service: tails every model's payload log, tests a sliding window against the
model's reference every K records or T seconds, and exports the results for Prometheus.

Gauges (labels model, signal; signal is `embedding`, `prediction` or an input statistic):
    bundle_drift_score        the test statistic (KS distance, chi-square, MMD^2)
    bundle_drift_p_value      its p-value
    bundle_drift_threshold    the corrected level the p-value is compared with (alpha / m)
    bundle_drift_detected     1 when p_value < threshold, else 0
and per model: bundle_payload_log_records_total (records read), bundle_drift_window_records
(records in the window), bundle_drift_checks_total (windows tested). A model is drifted when
max by (model) of bundle_drift_detected is 1 (the Bonferroni rule of monitor/drift.py).
"""

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.drift import DriftDetector, Signal
from monitor.reference import Reference
from monitor.tail import Tail

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """How often and on how much the monitor tests (python -m monitor --help)."""

    window: int = 200  # records in the sliding window
    every: int = 50  # test after this many new records ...
    interval: float = 30.0  # ... or this many seconds, whichever comes first
    min_records: int = 30  # no test on a window smaller than this
    alpha: float = 0.05
    n_perm: int = 500


@dataclass
class Watch:
    """One model: its reference, detector, payload tail and sliding window."""

    name: str
    detector: DriftDetector
    tail: Tail
    window: deque = field(default_factory=deque)
    new: int = 0
    last_check: float = 0.0
    signals: list[Signal] = field(default_factory=list)


class Metrics:
    """The monitor's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "signal"]
        r = self.registry
        self.score = Gauge("bundle_drift_score", "Drift test statistic", labels, registry=r)
        self.p_value = Gauge("bundle_drift_p_value", "Drift test p-value", labels, registry=r)
        self.threshold = Gauge(
            "bundle_drift_threshold", "Corrected level for the p-value", labels, registry=r
        )
        self.detected = Gauge(
            "bundle_drift_detected", "1 when drift is detected", labels, registry=r
        )
        self.records = Counter(
            "bundle_payload_log_records", "Payload log records read", ["model"], registry=r
        )
        self.window = Gauge(
            "bundle_drift_window_records", "Records in the window", ["model"], registry=r
        )
        self.checks = Counter("bundle_drift_checks", "Windows tested", ["model"], registry=r)

    def export(self, model: str, signals: list[Signal]) -> None:
        for s in signals:
            self.score.labels(model, s.name).set(s.score)
            self.p_value.labels(model, s.name).set(s.p_value)
            self.threshold.labels(model, s.name).set(s.threshold)
            self.detected.labels(model, s.name).set(1.0 if s.drifted else 0.0)
        self.checks.labels(model).inc()


class Monitor:
    """Every model of a store that has a reference profile, watched over its payload log."""

    def __init__(self, store: Path, payload_dir: Path, settings: Optional[Settings] = None):
        self.store, self.payload_dir = Path(store), Path(payload_dir)
        self.settings = settings or Settings()
        self.metrics = Metrics()
        self.watches: dict[str, Watch] = {}
        self.loaded: dict[Path, float] = {}  # .mar -> mtime of the reference loaded from it

    def refresh(self) -> None:
        """Loads the reference of every .mar that is new or rebuilt since the last look."""
        for mar in sorted(self.store.glob("*.mar")):
            mtime = mar.stat().st_mtime
            if self.loaded.get(mar) == mtime:
                continue
            self.loaded[mar] = mtime
            try:
                ref = Reference.load(mar)
            except KeyError:
                log.warning("%s has no drift reference (exported before it existed)", mar.name)
                continue
            except (OSError, ValueError) as e:
                log.warning("%s: reference not readable: %s", mar.name, e)
                continue
            s = self.settings
            detector = DriftDetector(ref, alpha=s.alpha, n_perm=s.n_perm)
            old = self.watches.get(mar.stem)
            self.watches[mar.stem] = Watch(
                mar.stem,
                detector,
                old.tail if old else Tail(self.payload_dir / mar.stem),
                deque(old.window if old else (), maxlen=s.window),
                last_check=time.monotonic(),
            )
            log.info("watching %s: %s", mar.stem, ", ".join(ref.signals))

    def step(self, now: Optional[float] = None) -> dict[str, list[Signal]]:
        """Reads new records and tests each model that is due; returns the tests run."""
        now = time.monotonic() if now is None else now
        done: dict[str, list[Signal]] = {}
        for name, w in self.watches.items():
            records = w.tail.read()
            if records:
                w.window.extend(records)
                w.new += len(records)
                self.metrics.records.labels(name).inc(len(records))
            self.metrics.window.labels(name).set(len(w.window))
            due = w.new >= self.settings.every or (
                w.new > 0 and now - w.last_check >= self.settings.interval
            )
            if due and len(w.window) >= self.settings.min_records:
                w.signals = w.detector.check(list(w.window))
                w.new, w.last_check = 0, now
                self.metrics.export(name, w.signals)
                done[name] = w.signals
                drifted = [s.name for s in w.signals if s.drifted]
                log.info("%s: %d records, drifted: %s", name, len(w.window), drifted or "none")
        return done

    def run(self, poll: float = 1.0, rescan: float = 30.0) -> None:
        """Forever: read and test every `poll` seconds, look for new .mar files every `rescan`."""
        last_scan = -rescan
        while True:
            if time.monotonic() - last_scan >= rescan:
                self.refresh()
                last_scan = time.monotonic()
            self.step()
            time.sleep(poll)

    def status(self) -> dict[str, Any]:
        """Per model: window size and the drifted signals of the last test."""
        return {
            n: {"records": len(w.window), "drifted": [s.name for s in w.signals if s.drifted]}
            for n, w in self.watches.items()
        }
