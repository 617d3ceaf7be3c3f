"""Performance monitoring with labels: the served version scored on each shard as it arrives.

A shard is labelled data that no served version has trained on yet, so it is the truth about
how the served version does on today's molecules. On arrival (and, for a shard copied in by
hand, at the next step) the served version's scripted model.pt answers every molecule of the
shard, as TorchServe would (the .mar holds the same file), and two things are logged as one
`assess` event in events.jsonl:

- the realised MAE (meV) against the shard's U0 labels;
- the drift monitor's tests of the shard against the served version's reference profile
  (monitor/drift.py, the records built as the handler logs them: handlers' molecule_stats, the
  model's `embed`, the energy per atom).

The step's retrain triggers read these events (online/policy.py); the monitor exports the
latest as bundle_online_realised_mae_mev (online/metrics.py).
"""

import logging
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from monitor.drift import DriftDetector, flagged
from monitor.reference import Reference
from online.lineage import ASSESS_EVENT, Lineage
from train.qm9.data import read_qm9pack_csv
from train.qm9.run import monitor_inputs

log = logging.getLogger(__name__)


def score_shard(
    artifacts: Path, shard: Path, elements: list[int], alpha: Optional[float], min_samples: int
) -> dict[str, Any]:
    """The realised MAE of the model.pt in `artifacts` on one shard CSV, and its drift tests
    against the reference beside it (None when `alpha` is None, there is no reference, or the
    shard is too small for any test)."""
    molecules = read_qm9pack_csv([shard])
    model = torch.jit.load(str(artifacts / "model.pt"))
    stats, embeddings, per_atom, energy = monitor_inputs(model, molecules, elements)
    truth = torch.cat([m.y.view(-1) for m in molecules]).double()
    out: dict[str, Any] = {
        "n": len(molecules),
        "mae_mev": round(float((energy.double() - truth).abs().mean()) * 1000, 2),
        "drift": None,
    }
    if alpha is None:
        return out
    try:
        reference = Reference.load(artifacts)
    except FileNotFoundError:
        log.warning("%s has no drift reference: the shard's drift is not tested", artifacts)
        return out
    rows = embeddings.float().numpy()
    records = [
        {"stats": st, "embedding": rows[i], "prediction": e}
        for i, (st, e) in enumerate(zip(stats, per_atom))
    ]
    signals = DriftDetector(reference, alpha=alpha, min_samples=min_samples).check(records)
    if not signals:  # every signal has fewer than min_samples in the shard
        return out
    out["drift"] = {
        "flagged": flagged(signals),
        "alpha": alpha,
        "drifted": [s.name for s in signals if s.drifted],
        "p_values": {s.name: s.p_value for s in signals},
    }
    return out


def assess(cfg: DictConfig, lineage: Lineage, shards: list[str]) -> list[dict[str, Any]]:
    """The served version's `assess` events of every shard in `shards` that arrived after it
    was trained, each scored once (new ones are scored and logged now); [] if nothing is
    served."""
    served = lineage.served()
    if served is None:
        return []
    version, seen = served["model_version"], set(served["shards"])
    done = {
        e["shard"]: e
        for e in lineage.read_events()
        if e["event"] == ASSESS_EVENT and e["model_version"] == version
    }
    trigger = cfg.online.trigger
    out = []
    for shard in shards:
        if shard in seen:
            continue
        if shard not in done:
            scored = score_shard(
                Path(served["artifacts"]),
                Path(cfg.online.workdir) / "data" / "train" / shard,
                list(cfg.data.elements),
                trigger.drift_alpha,
                int(trigger.drift_min_samples),
            )
            done[shard] = lineage.log(
                ASSESS_EVENT, model=cfg.name, model_version=version, shard=shard, **scored
            )
            drift = scored["drift"]
            log.info(
                "%s v%d on %s: realised MAE %.1f meV, drift %s",
                cfg.name,
                version,
                shard,
                scored["mae_mev"],
                drift["drifted"] if drift else "not tested",
            )
        out.append(done[shard])
    return out
