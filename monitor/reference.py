"""The drift reference profile: what a model saw at training, in the payload log's own shape.

A record (one served item, or one training input at export) is
    {"stats": {"nodes": 12.0, "elements": [0.5, 0.3, ...], ...},   # the family's input statistics
     "embedding": [0.1, ...],                                        # penultimate layer, or absent
     "prediction": 3 | [3, 0] | -4.12}    # label index (a node request: one per node) or a value
The export step turns a sample of training inputs into such records (train/core/reference.py) and
saves them as reference.json (kinds, labels, summary) and reference.npz (the samples); the
.mar carries both (serve/archive.py), and the monitor compares windows of served records with them.
"""

import io
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

FILES = ("reference.json", "reference.npz")
EMBEDDING, PREDICTION = "embedding", "prediction"


def to_arrays(records: Iterable[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Signal name -> samples: (n,) for a scalar statistic or the predictions, (n, d) for a
    vector statistic or the embedding. A signal some record lacks keeps the records that have it."""
    columns: dict[str, list[Any]] = {}
    for rec in records:
        for name, value in (rec.get("stats") or {}).items():
            columns.setdefault(name, []).append(value)
        if rec.get(EMBEDDING) is not None:
            columns.setdefault(EMBEDDING, []).append(rec[EMBEDDING])
        pred = rec.get(PREDICTION)
        if pred is not None:
            # A node request predicts one label per returned node: each is a sample.
            columns.setdefault(PREDICTION, []).extend(pred if isinstance(pred, list) else [pred])
    return {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}


@dataclass
class Reference:
    """One model's reference samples per signal, and whether its predictions are labels."""

    model: str
    samples: dict[str, np.ndarray]
    labels: Optional[list[str]] = None  # classifiers: label names; None: a regression value
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def signals(self) -> list[str]:
        return sorted(self.samples)

    def kind(self, signal: str) -> str:
        """'label' (categorical predictions), 'vector' or 'scalar'."""
        if signal == PREDICTION and self.labels is not None:
            return "label"
        return "vector" if self.samples[signal].ndim == 2 else "scalar"

    @classmethod
    def from_records(
        cls, model: str, records: list[dict[str, Any]], labels: Optional[list[str]] = None
    ) -> "Reference":
        return cls(model, to_arrays(records), labels, {"records": len(records)})

    def save(self, out_dir: str | Path) -> Path:
        """Writes reference.json and reference.npz into out_dir; returns the json path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "reference.npz", **self.samples)
        summary = {
            name: {
                "kind": self.kind(name),
                "n": int(len(a)),
                "mean": np.round(a.mean(axis=0), 6).tolist(),
                "std": np.round(a.std(axis=0), 6).tolist(),
            }
            for name, a in sorted(self.samples.items())
            if len(a)
        }
        doc = {"version": 1, "model": self.model, "labels": self.labels, **self.meta}
        doc["signals"] = summary
        if self.labels is not None and PREDICTION in self.samples:
            counts = np.bincount(self.samples[PREDICTION].astype(int), minlength=len(self.labels))
            doc["label_counts"] = dict(zip(self.labels, counts.tolist()))
        (out / "reference.json").write_text(json.dumps(doc, indent=2) + "\n")
        return out / "reference.json"

    @classmethod
    def load(cls, path: str | Path) -> "Reference":
        """From an artifact folder (reference.json + .npz), either of its files, or a .mar."""
        path = Path(path)
        if path.suffix == ".mar":
            with zipfile.ZipFile(path) as mar:
                doc = json.loads(mar.read("reference.json"))
                npz = np.load(io.BytesIO(mar.read("reference.npz")))
                samples = {k: npz[k] for k in npz.files}
        else:
            folder = path if path.is_dir() else path.parent
            doc = json.loads((folder / "reference.json").read_text())
            with np.load(folder / "reference.npz") as npz:
                samples = {k: npz[k] for k in npz.files}
        meta = {k: v for k, v in doc.items() if k not in ("model", "labels", "signals")}
        return cls(doc["model"], samples, doc.get("labels"), meta)
