"""The online loop's model performance for Prometheus, exported by the drift monitor.

The loop is a command, not a server, so it leaves its numbers in the workspace (events.jsonl,
lineage.jsonl) and this collector reads them at each scrape (`python -m monitor
--online-workdir D`; `make serve` passes the loop's default workspace):

- bundle_online_realised_mae_mev{model, version}: the version's MAE on the newest shard it was
  scored on (online/assess.py), in meV;
- bundle_online_realised_molecules{model, version}: that shard's size;
- bundle_online_val_mae_mev{model, version}: the served version's own val MAE, the yardstick;
- bundle_online_retrains_total{model, trigger}: retrains, counted per trigger that fired
  (growth, realised_mae, drift; a retrain fired by two counts for both).
"""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from online.lineage import ASSESS_EVENT, Lineage, version_name


class OnlineCollector:
    """A prometheus_client collector over one online workspace (nothing while it is empty)."""

    def __init__(self, workdir: str | Path) -> None:
        self.lineage = Lineage(workdir)

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        mae = GaugeMetricFamily(
            "bundle_online_realised_mae_mev",
            "MAE of a served version on the newest labelled shard it was scored on (meV)",
            labels=labels,
        )
        size = GaugeMetricFamily(
            "bundle_online_realised_molecules",
            "Molecules in that shard",
            labels=labels,
        )
        val = GaugeMetricFamily(
            "bundle_online_val_mae_mev",
            "Validation MAE of the served version (meV)",
            labels=labels,
        )
        retrains = CounterMetricFamily(
            "bundle_online_retrains",
            "Retrains of the online loop, per trigger that fired",
            labels=["model", "trigger"],
        )
        latest = {}
        for e in self.lineage.read_events():
            if e["event"] == ASSESS_EVENT:
                latest[(e["model"], version_name(e["model_version"]))] = e
        for (model, version), e in sorted(latest.items()):
            mae.add_metric([model, version], e["mae_mev"])
            size.add_metric([model, version], e["n"])
        records = self.lineage.records()
        served = self.lineage.served()
        if served is not None:
            model = served["served_as"].split("/", 1)[0]
            val.add_metric(
                [model, version_name(served["model_version"])], served["metrics"]["val_mae_mev"]
            )
        fired: Counter[tuple[str, str]] = Counter()
        for r in records:
            model = r["served_as"].split("/", 1)[0]
            for name in (r.get("trigger") or {}).get("numbers", {}).get("fired_by", []):
                fired[(model, name)] += 1
        for (model, name), count in sorted(fired.items()):
            retrains.add_metric([model, name], count)
        yield from (mae, size, val, retrains)
