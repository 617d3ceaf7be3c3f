"""The loop's commands: init, arrive, step (trigger -> retrain -> gate -> .mar -> hot swap),
watch and status. Each takes the composed config (experiment=qm9_et + online=default)."""

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf, open_dict

from online.assess import assess
from online.data import DvcWorkspace
from online.lineage import Lineage, version_name
from online.policy import combine, drift_trigger, realised_trigger, retrain_trigger, safety_gate
from online.serving import hot_swap
from serve.archive import build_mar
from serve.client import ManagementClient
from train.qm9.run import load_splits

log = logging.getLogger(__name__)


@contextmanager
def locked(workdir: Path) -> Iterator[None]:
    """One loop command at a time per workspace (a watcher and a manual step may overlap)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def init(cfg: DictConfig) -> dict[str, Any]:
    """Cuts the configured QM9 split into shards and versions the first data state."""
    ws = DvcWorkspace(cfg.online)
    with locked(ws.root):
        train, val, test = load_splits(cfg)
        version = ws.init(train, val, test)
        Lineage(ws.root).log("init", data_version=version, pending=len(ws.pending()))
    return version


def arrive(cfg: DictConfig) -> Optional[dict[str, Any]]:
    """Makes the next shard available and scores the served version on it (online/assess.py);
    returns the new data version (None: no shard left)."""
    ws = DvcWorkspace(cfg.online)
    with locked(ws.root):
        version = ws.arrive()
        lineage = Lineage(ws.root)
        lineage.log("arrive", data_version=version, pending=len(ws.pending()))
        if version is not None:
            assess(cfg, lineage, version["shards"])
    return version


def client_for(cfg: DictConfig) -> Optional[ManagementClient]:
    serve = cfg.online.serve
    if not serve.get("management"):
        return None
    return ManagementClient(serve.management, serve.key_file, serve.timeout_s)


def step(cfg: DictConfig) -> dict[str, Any]:
    """Retrains if the trigger fires; returns what happened (and the lineage record if any)."""
    ws = DvcWorkspace(cfg.online)
    with locked(ws.root):
        return _step(cfg, ws, Lineage(ws.root))


def _step(cfg: DictConfig, ws: DvcWorkspace, lineage: Lineage) -> dict[str, Any]:
    if not ws.exists():
        raise FileNotFoundError(f"{ws.root} is no online workspace: run `init` first")
    data = ws.commit()  # versions anything that arrived by hand; a no-op otherwise
    served = lineage.served()
    # Shards that arrived since the served version was trained, scored by it (a shard copied
    # in by hand is scored now).
    assessed = assess(cfg, lineage, data["shards"])
    bounds = cfg.online.trigger
    trigger = combine(
        {
            "growth": retrain_trigger(
                data["n_train"], served["n_train"] if served else None, cfg.online.trigger_fraction
            ),
            "realised_mae": realised_trigger(
                assessed,
                served["metrics"]["val_mae_mev"] if served else None,
                bounds.realised_mae_mev,
                bounds.realised_mae_frac,
            ),
            "drift": drift_trigger(assessed),
        }
    )
    lineage.log(
        "trigger", fired=trigger.yes, data_version=data["data_version"], **trigger.as_dict()
    )
    if not trigger.yes:
        log.info("no retrain: %s", trigger.reason)
        return {"retrained": False, "trigger": trigger.as_dict()}

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    n = lineage.next_version()
    out_root = Path(cfg.online.artifacts) / f"v{n}"
    run_cfg = cfg.copy()
    with open_dict(run_cfg):
        run_cfg.paths.artifacts = str(out_root / cfg.name)
        run_cfg.data.splits_dir = str(ws.data)
        run_cfg.data_version = data["data_version"]
        if served is not None:
            run_cfg.init_from = served["artifacts"]
            run_cfg.trainer.max_epochs = cfg.online.finetune.max_epochs
            run_cfg.optim.lr = cfg.online.finetune.lr
    metrics = get_method(run_cfg.runner)(run_cfg)

    gate = safety_gate(
        metrics["val_mae_mev"],
        served["metrics"]["val_mae_mev"] if served else None,
        cfg.online.gate.margin_frac,
    )
    lineage.log("gate", model_version=n, promoted=gate.yes, **gate.as_dict())
    if not gate.yes:
        log.warning("safety gate: %s", gate.reason)

    version = version_name(n)
    mar = build_mar(cfg.name, out_root, out_root, version)
    record: dict[str, Any] = {
        "model_version": n,
        "served_as": f"{cfg.name}/{version}",
        "data_version": data["data_version"],
        "data_md5": data["md5"],
        "dvc_remote": data["remote"],
        "n_train": data["n_train"],
        "n_val": data["n_val"],
        "n_test": data["n_test"],
        "shards": data["shards"],
        "parent_version": served["model_version"] if served else 0,
        "init_from": run_cfg.get("init_from"),
        "metrics": metrics,
        "trigger": trigger.as_dict(),
        "gate": gate.as_dict(),
        "promoted": False,
        "artifacts": str(Path(run_cfg.paths.artifacts).resolve()),
        "mar": str(mar.resolve()),
        "overrides": OmegaConf.to_container(cfg.online, resolve=True),
        "started": started,
    }
    swap = None
    if gate.yes:
        client = client_for(cfg)
        if client is not None:
            try:
                swap = hot_swap(
                    client,
                    cfg.name,
                    version,
                    mar,
                    cfg.online.serve.model_store,
                    cfg.online.serve.initial_workers,
                    cfg.online.serve.drain_seconds,
                    lineage.log,
                    cfg.online.serve.get("inference"),
                )
            except Exception as e:  # the record must say the swap failed, then re-raise
                record.update(finished=_now(), swap_error=str(e))
                lineage.append(record)
                raise
        record["promoted"] = True
    record.update(finished=_now(), swap=swap)
    lineage.append(record)
    return {"retrained": True, "trigger": trigger.as_dict(), "record": record}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def reconcile(cfg: DictConfig) -> Optional[dict[str, Any]]:
    """Makes the running server serve the lineage's promoted version again (after a restart)."""
    ws = DvcWorkspace(cfg.online)
    served, client = Lineage(ws.root).served(), client_for(cfg)
    if served is None or client is None:
        return None
    version = version_name(served["model_version"])
    return hot_swap(
        client,
        cfg.name,
        version,
        Path(served["mar"]),
        cfg.online.serve.model_store,
        cfg.online.serve.initial_workers,
        cfg.online.serve.drain_seconds,
        Lineage(ws.root).log,
        cfg.online.serve.get("inference"),
    )


def watch(cfg: DictConfig) -> list[dict[str, Any]]:
    """Every interval, one more shard arrives and a step runs; stops when shards run out."""
    results: list[dict[str, Any]] = []
    limit = cfg.online.watch.max_steps
    while limit is None or len(results) < limit:
        version = arrive(cfg)
        if version is None:
            log.info("no shard left: the watcher stops")
            break
        results.append(step(cfg))
        time.sleep(float(cfg.online.watch.interval_s))
    return results


def status(cfg: DictConfig) -> dict[str, Any]:
    """Data versions, model lineage and what the server serves now."""
    ws = DvcWorkspace(cfg.online)
    lineage = Lineage(ws.root)
    served = lineage.served()
    client = client_for(cfg)
    server: Any = None
    if client is not None:
        try:
            server = client.versions(cfg.name)
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            server = f"unreachable: {e}"
    return {
        "workdir": str(ws.root),
        "pending_shards": len(ws.pending()) if ws.exists() else None,
        "data_versions": ws.versions(),
        "models": [
            {k: r.get(k) for k in ("model_version", "data_version", "n_train", "promoted")}
            | {"val_mae_mev": r["metrics"]["val_mae_mev"]}
            for r in lineage.records()
        ],
        "served": served and version_name(served["model_version"]),
        "server": server,
    }
