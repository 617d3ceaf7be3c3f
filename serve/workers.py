"""Each model's workers as Prometheus gauges, read from TorchServe's management API.

TorchServe 0.12 exports no worker state on its metrics API (WorkerLoadTime stays after a worker
dies, and /ping is one answer for the whole server), so a model without a READY worker is seen
only in `GET /models/<name>`. `WorkersCollector` asks it at every scrape: the monitor service
registers it in the registry it serves on :8083 (docs/monitoring.md).
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from serve.client import ManagementClient

READY = "bundle_model_ready_workers"
WORKERS = "bundle_model_workers"
UP = "bundle_management_up"


class WorkersCollector(Collector):
    """At each scrape: READY workers, workers by status, and whether the API answered."""

    def __init__(self, management_url: str, key_file: Optional[Path], timeout_s: float = 5) -> None:
        self.client = ManagementClient(management_url, key_file, timeout_s)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready = GaugeMetricFamily(
            READY, "Workers of the model's default version in state READY", labels=["model"]
        )
        workers = GaugeMetricFamily(
            WORKERS, "Workers of the model's default version, by status", labels=["model", "status"]
        )
        up = GaugeMetricFamily(UP, "1 when TorchServe's management API answered this scrape")
        try:
            described = {name: self.client.describe(name) for name in self.client.models()}
        except (OSError, RuntimeError, KeyError, ValueError):
            # No answer, no key file yet, or a model unregistered mid-scrape: no worker series
            # this time (TorchServeDown and absent READY gauges say the rest).
            up.add_metric([], 0)
            yield up
            return
        for name, desc in described.items():
            statuses = [str(w.get("status", "UNKNOWN")) for w in desc.get("workers", [])]
            ready.add_metric([name], statuses.count("READY"))
            for status in sorted(set(statuses)):
                workers.add_metric([name, status], statuses.count(status))
        up.add_metric([], 1)
        yield from (ready, workers, up)
