"""The export step's drift reference profile: a sample of training inputs as payload records.

Each family's export builds one record per sampled training input, exactly as its handler logs
a served one (handlers/payload_log.py): the input statistics from the handlers' own helper
(train/core/handlers.py), the model's penultimate embedding (its `embed` method) and its
prediction. monitor/reference.py owns the format; this writes it beside model.pt.
"""

import random
from pathlib import Path
from typing import Any, Optional

from torch import Tensor

from monitor.reference import Reference

SAMPLES = 500  # training inputs per reference: enough for a KS or MMD test against a window


def sample(n: int, seed: int, k: int = SAMPLES) -> list[int]:
    """Up to k indices of range(n), drawn without replacement and sorted; fixed by seed."""
    return sorted(random.Random(seed).sample(range(n), min(k, n)))


def write_reference(
    out_dir: str | Path,
    model: str,
    stats: list[dict[str, Any]],
    embeddings: Optional[Tensor],
    predictions: list[Any],
    labels: Optional[list[str]] = None,
) -> Path:
    """Writes reference.json and reference.npz from per-input stats, (n, H) embeddings and
    predictions (label indices, or values when `labels` is None); returns the json path."""
    rows = embeddings.detach().float().cpu().numpy() if embeddings is not None else None
    records = [
        {
            "stats": s,
            "embedding": rows[i] if rows is not None else None,
            "prediction": predictions[i],
        }
        for i, s in enumerate(stats)
    ]
    return Reference.from_records(model, records, labels).save(out_dir)
