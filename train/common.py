"""Pieces every training run shares: seeding, logger, trainer, and export of artifacts."""

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

log = logging.getLogger(__name__)


def make_trainer(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """Builds the Lightning Trainer from cfg.trainer with the configured logger."""
    logger: Any = False
    if cfg.get("logger") and cfg.logger.get("_target_"):
        Path(cfg.logger.save_dir).mkdir(parents=True, exist_ok=True)
        logger = instantiate(cfg.logger)
        if hasattr(logger, "log_hyperparams"):
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        logger=logger,
        callbacks=list(callbacks),
        enable_checkpointing=False,
    )


def finish_logger(trainer: L.Trainer) -> None:
    """Closes a W&B run so that consecutive runs in one process do not share it."""
    experiment = getattr(trainer.logger, "_experiment", None)
    if experiment is not None and hasattr(experiment, "finish"):
        experiment.finish()


def export_torchscript(
    net: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    out_dir: str | Path,
    meta: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Scripts `net`, checks it against eager on `example_inputs`, and writes the artifact folder.

    Writes model.pt (TorchScript), state_dict.pt (eager weights, for parity tests), meta.json
    (what the handler needs) and metrics.json (test metrics).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(*example_inputs), net(*example_inputs))
    scripted.save(str(out / "model.pt"))
    # A file that scripts and saves can still fail to load (PyG #8867): prove it round-trips.
    reloaded = torch.jit.load(str(out / "model.pt"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(*example_inputs), net(*example_inputs))
    torch.save(net.state_dict(), out / "state_dict.pt")
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("exported %s: %s", out, metrics)
    return out
