"""The bundle's Grafana dashboard, built with grafanalib and written out as JSON.

python -m deploy.grafana.dashboard     writes deploy/grafana/bundle.json (import it in Grafana
                                       with a Prometheus data source named "Prometheus")

Every expression is listed in `PANELS`, so tests/e2e/test_prometheus.py can ask a real Prometheus
for each one. Panels marked `needs_monitor` read the monitor service's gauges (drift, payload
log, READY workers) and return data only where that service runs.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from grafanalib._gen import DashboardEncoder
from grafanalib.core import Dashboard, GridPos, RowPanel, Target, TimeSeries

OUT = Path(__file__).resolve().parent / "bundle.json"
DATASOURCE = "Prometheus"
W = "[5m]"


def per_input(counter: str) -> str:
    """Mean of an input size per input: the summed counter over the inputs counter."""
    inputs = f"sum by (ModelName) (rate(bundle_inputs_total{W}))"
    return f"sum by (ModelName) (rate({counter}{W})) / {inputs}"


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    # (PromQL, legend) per series.
    targets: list[tuple[str, str]]
    description: str = ""
    needs_monitor: bool = False
    row: str = ""


@dataclass
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


REQUESTS = f"sum by (model_name) (rate(ts_inference_requests_total{W}))"
ROWS = [
    Row(
        "Traffic and errors (TorchServe frontend)",
        [
            Panel("Requests per second", "reqps", [(REQUESTS, "{{model_name}}")]),
            Panel(
                "Mean latency",
                "ms",
                [
                    (
                        f"sum by (model_name) (rate(ts_inference_latency_microseconds{W})) / "
                        f"sum by (model_name) (rate(ts_inference_requests_total{W})) / 1000",
                        "{{model_name}} inference",
                    ),
                    (
                        f"sum by (model_name) (rate(ts_queue_latency_microseconds{W})) / "
                        f"sum by (model_name) (rate(ts_inference_requests_total{W})) / 1000",
                        "{{model_name}} queue",
                    ),
                ],
                "TorchServe counts latency as a sum of microseconds per model: a mean, not a p99.",
            ),
            Panel(
                "5xx per inference request (all models)",
                "percentunit",
                [
                    (
                        f"sum(rate(Requests5XX{W})) / (sum(rate(ts_inference_requests_total{W}))"
                        f" + sum(rate(Requests5XX{W})))",
                        "5xx",
                    )
                ],
                "The ServerErrorRatioHigh alert fires above 5% for 5 minutes.",
            ),
            Panel(
                "Refused or failed requests, by field",
                "reqps",
                [
                    (
                        f"sum by (ModelName, Field, Code) (rate(bundle_request_errors_total{W}))",
                        "{{ModelName}} {{Field}} {{Code}}",
                    )
                ],
                "The handlers' own 4xx (and 500) answers, by the field at fault.",
            ),
            Panel("Handler time of the last batch", "ms", [("HandlerTime", "{{ModelName}}")]),
        ],
    ),
    Row(
        "Model performance (handlers)",
        [
            Panel(
                "Predictions per label",
                "reqps",
                [
                    (
                        f"sum by (ModelName, Label) (rate(bundle_predictions_total{W}))",
                        "{{ModelName}} {{Label}}",
                    )
                ],
            ),
            Panel(
                "Top-1 probability, median",
                "percentunit",
                [
                    (
                        "histogram_quantile(0.5, sum by (ModelName, le) "
                        f"(rate(bundle_top1_probability_bucket{W})))",
                        "{{ModelName}}",
                    )
                ],
            ),
            Panel(
                "Answers with top-1 probability under 0.75",
                "percentunit",
                [
                    (
                        'sum by (ModelName) (rate(bundle_top1_probability_bucket{le="0.75"}'
                        f"{W})) / sum by (ModelName) (rate(bundle_top1_probability_count{W}))",
                        "{{ModelName}}",
                    )
                ],
            ),
            Panel(
                "Graph size per input",
                "short",
                [
                    (per_input("bundle_input_nodes_total"), "{{ModelName}} nodes"),
                    (per_input("bundle_input_edges_total"), "{{ModelName}} edges"),
                ],
            ),
            Panel(
                "Molecule and text size per input",
                "short",
                [
                    (per_input("bundle_input_atoms_total"), "{{ModelName}} atoms"),
                    (per_input("bundle_input_tokens_total"), "{{ModelName}} tokens to the model"),
                ],
            ),
            Panel(
                "Image size per input",
                "short",
                [
                    (per_input("bundle_input_pixels_total"), "{{ModelName}} pixels"),
                    (per_input("bundle_input_bytes_total"), "{{ModelName}} bytes"),
                ],
            ),
            Panel(
                "QM9: mean energy per atom",
                "eV",
                [
                    (
                        f"sum by (ModelName) (rate(bundle_energy_per_atom_ev_sum{W})) / "
                        f"sum by (ModelName) (rate(bundle_energy_per_atom_ev_count{W}))",
                        "{{ModelName}}",
                    )
                ],
            ),
            Panel(
                "QM9: largest force norm, p90",
                "eV/Å",
                [
                    (
                        "histogram_quantile(0.9, sum by (ModelName, le) "
                        f"(rate(bundle_max_force_norm_ev_per_angstrom_bucket{W})))",
                        "{{ModelName}}",
                    )
                ],
            ),
        ],
    ),
    Row(
        "Workers and drift (monitor service)",
        [
            Panel(
                "READY workers",
                "short",
                [("bundle_model_ready_workers", "{{model}}")],
                "From the management API (serve/workers.py); ModelNoReadyWorker fires at 0.",
                needs_monitor=True,
            ),
            Panel(
                "Drift score and threshold",
                "short",
                [
                    ("max by (model, signal) (bundle_drift_score)", "{{model}} {{signal}}"),
                    (
                        "max by (model, signal) (bundle_drift_threshold)",
                        "{{model}} {{signal}} threshold",
                    ),
                ],
                needs_monitor=True,
            ),
            Panel(
                "Drift detected",
                "short",
                [("max by (model) (bundle_drift_detected)", "{{model}}")],
                "ModelDriftSustained fires when this stays 1 for 2 minutes.",
                needs_monitor=True,
            ),
            Panel(
                "Payload log records read per second",
                "short",
                [(f"sum by (model) (rate(bundle_payload_log_records_total{W}))", "{{model}}")],
                "PayloadLogStalled fires when this is 0 while the model serves requests.",
                needs_monitor=True,
            ),
        ],
    ),
]
PANELS = [p for row in ROWS for p in row.panels]


def dashboard() -> Dashboard:
    """Rows of two panels side by side, in the order of ROWS."""
    panels, y = [], 0
    for row in ROWS:
        panels.append(RowPanel(title=row.title, gridPos=GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        for i, p in enumerate(row.panels):
            targets = [
                Target(expr=expr, legendFormat=legend, refId=chr(ord("A") + j))
                for j, (expr, legend) in enumerate(p.targets)
            ]
            panels.append(
                TimeSeries(
                    title=p.title,
                    description=p.description,
                    dataSource=DATASOURCE,
                    targets=targets,
                    unit=p.unit,
                    gridPos=GridPos(h=8, w=12, x=12 * (i % 2), y=y + 8 * (i // 2)),
                )
            )
        y += 8 * ((len(row.panels) + 1) // 2)
    return Dashboard(
        title="TorchServe bundle",
        uid="torchserve-bundle",
        tags=["torchserve", "bundle"],
        panels=panels,
        refresh="30s",
    ).auto_panel_ids()


def to_json() -> str:
    return json.dumps(dashboard().to_json_data(), cls=DashboardEncoder, indent=2, sort_keys=True)


def main() -> None:
    OUT.write_text(to_json() + "\n")
    print(f"wrote {OUT} ({len(PANELS)} panels)")


if __name__ == "__main__":
    main()
