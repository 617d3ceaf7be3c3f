"""Evidently's data drift report: a model's reference profile against the current window.

python -m monitor.report MODEL [--store model_store] [--payload-dir payload_log]
                         [--window 200] [--out reports/drift]
writes <out>/<MODEL>.html and <out>/<MODEL>.json (`make drift-report MODEL=<name>`). It runs in
.venv-report (requirements/report.txt: Evidently needs pandas 2), so it reads the reference and
the payload log with monitor/reference.py and monitor/tail.py alone (numpy, no torch).

Columns: every scalar input statistic, each component of a vector statistic (`elements[2]`),
the embedding projected on the reference's first principal components (`embedding_pc1`, ...,
Evidently has no kernel MMD; the monitor's gauges have it), and the prediction (a label, or
QM9's energy per atom; for a node request, the label of the first node it asked for).
"""

import argparse
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from monitor.reference import EMBEDDING, PREDICTION, Reference, to_arrays
from monitor.tail import Tail

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = 5


def frames(ref: Reference, records: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, current) DataFrames with the same columns."""
    first = [
        {
            **r,
            PREDICTION: r[PREDICTION][0]
            if isinstance(r.get(PREDICTION), list)
            else r.get(PREDICTION),
        }
        for r in records
        if r.get(PREDICTION) not in (None, [])
    ]
    cur_arrays = to_arrays(first)
    basis: Optional[np.ndarray] = None
    if EMBEDDING in ref.samples:
        centred = ref.samples[EMBEDDING] - ref.samples[EMBEDDING].mean(axis=0)
        basis = np.linalg.svd(centred, full_matrices=False)[2][:COMPONENTS]  # (k, H)
    out = []
    for arrays in (ref.samples, cur_arrays):
        cols: dict[str, Any] = {}
        for name in ref.signals:
            if name not in arrays:
                continue
            a = arrays[name]
            if name == EMBEDDING and basis is not None:
                proj = (a - ref.samples[EMBEDDING].mean(axis=0)) @ basis.T
                cols |= {f"embedding_pc{i + 1}": proj[:, i] for i in range(proj.shape[1])}
            elif name == PREDICTION and ref.labels is not None:
                cols[name] = [ref.labels[int(v)] for v in a]
            elif a.ndim == 2:
                cols |= {f"{name}[{i}]": a[:, i] for i in range(a.shape[1])}
            else:
                cols[name] = a
        out.append(pd.DataFrame(cols))
    shared = [c for c in out[0].columns if c in out[1].columns]
    return out[0][shared], out[1][shared]


def write_report(ref: Reference, records: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """Runs Evidently's DataDriftPreset; returns the HTML and JSON paths."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference, current = frames(ref, records)
    categorical = [PREDICTION] if ref.labels is not None and PREDICTION in current else []
    numerical = [c for c in current.columns if c not in categorical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    out.mkdir(parents=True, exist_ok=True)
    html, js = out / f"{ref.model}.html", out / f"{ref.model}.json"
    snapshot.save_html(str(html))
    snapshot.save_json(str(js))
    return html, js


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m monitor.report", description=__doc__.splitlines()[0]
    )
    p.add_argument("model")
    p.add_argument("--store", type=Path, default=ROOT / "model_store")
    p.add_argument("--payload-dir", type=Path, default=ROOT / "payload_log")
    p.add_argument("--window", type=int, default=200, help="the latest records to compare")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "drift")
    args = p.parse_args(argv)
    ref = Reference.load(args.store / f"{args.model}.mar")
    records = Tail(args.payload_dir / args.model).read()[-args.window :]
    if not records:
        raise SystemExit(f"no payload records for {args.model} in {args.payload_dir}: serve some")
    html, js = write_report(ref, records, args.out)
    print(
        f"{len(records)} records against {ref.meta.get('records')} reference inputs: {html}, {js}"
    )


if __name__ == "__main__":
    main()
