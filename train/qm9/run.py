"""QM9 U0 with torchmd-net's Equivariant Transformer: `python -m train experiment=qm9_et`.

The ET learns the residual of U0 after a per-element linear fit (fitted on the training split);
the exported `EnergyModel` adds the fit back, so the served energy is the total U0 in eV.
"""

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch_geometric.data import Data

from train.core.export import export_torchscript
from train.core.handlers import molecule_stats
from train.core.plots import plot_parity
from train.core.reference import sample, write_reference
from train.core.trainer import BestWeights, finish_logger, make_trainer
from train.qm9.data import (
    element_counts,
    load_qm9,
    loader,
    read_qm9pack_csv,
    split,
    subsample,
)
from train.qm9.model import EnergyModel

log = logging.getLogger(__name__)

SYMBOL = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}


class EnergyRegressor(L.LightningModule):
    """Fits EnergyModel's residual to U0 minus its reference; reports MAE in meV."""

    def __init__(
        self,
        model: EnergyModel,
        lr: float,
        weight_decay: float,
        loss: str = "l1",
        warmup_steps: int = 0,
        total_steps: int = 0,
        min_lr_frac: float = 0.0,
        anneal_by_s: float | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.save_hyperparameters(ignore=["model"])
        self.started: float | None = None

    def on_train_start(self) -> None:
        self.started = time.monotonic()

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)

        def factor(step: int) -> float:
            # Linear warm-up, then cosine to min_lr_frac over the planned steps, or over the
            # time budget when that runs out first (a time-capped run still ends annealed).
            if step < hp.warmup_steps:
                return (step + 1) / hp.warmup_steps
            if hp.total_steps <= hp.warmup_steps:
                return 1.0
            t = min(1.0, (step - hp.warmup_steps) / (hp.total_steps - hp.warmup_steps))
            if hp.anneal_by_s and self.started is not None:
                t = max(t, min(1.0, (time.monotonic() - self.started) / hp.anneal_by_s))
            return hp.min_lr_frac + (1 - hp.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _errors(self, batch: Any) -> Tensor:
        """(B,) predicted minus true U0 in eV (the reference cancels out)."""
        ref = self.model.reference(batch.z, batch.batch, batch.num_graphs)
        target = (batch.y.view(-1) - ref).float()
        return self.model.residual(batch.z, batch.pos, batch.batch) - target

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        err = self._errors(batch)
        loss = err.abs().mean() if self.hparams.loss == "l1" else err.pow(2).mean()
        self.log("train_loss", loss, batch_size=batch.num_graphs, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        mae = self._errors(batch).abs().mean() * 1000.0
        self.log("val_mae", mae, prog_bar=True, batch_size=batch.num_graphs, on_epoch=True)


def fit_reference(molecules: list[Data], elements: list[int], max_z: int) -> Tensor:
    """Least-squares U0 ~ sum of per-element energies (no intercept); (max_z,) float64 in eV."""
    counts = element_counts(molecules, elements)
    y = torch.cat([m.y for m in molecules]).to(torch.float64)
    coef = torch.linalg.lstsq(counts, y.unsqueeze(-1)).solution.squeeze(-1)
    atomref = torch.zeros(max_z, dtype=torch.float64)
    atomref[torch.tensor(elements)] = coef
    return atomref


@torch.no_grad()
def energies(
    model: EnergyModel, molecules: list[Data], batch_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(predicted, true, per-element reference) U0 in eV of each molecule, (M,) each."""
    model.eval()
    pred, true, ref = [], [], []
    for b in loader(molecules, batch_size):
        energy, _ = model(b.z, b.pos, b.batch, False)
        pred.append(energy)
        true.append(b.y.view(-1))
        ref.append(model.reference(b.z, b.batch, b.num_graphs))
    return torch.cat(pred), torch.cat(true), torch.cat(ref)


def evaluate(model: EnergyModel, molecules: list[Data], batch_size: int) -> dict[str, float]:
    """MAE (meV) of the model and of the per-element reference alone, on total U0."""
    pred, true, ref = energies(model, molecules, batch_size)
    return {
        "mae_mev": round(float((pred - true).abs().mean()) * 1000, 2),
        "baseline_mae_mev": round(float((ref - true).abs().mean()) * 1000, 2),
    }


def load_splits(cfg: DictConfig) -> tuple[list[Data], list[Data], list[Data]]:
    """The configured molecules and their fixed train/val/test split.

    With `data.splits_dir` (the online loop's DVC-tracked folder) the split is given as files:
    train/*.csv, val.csv and test.csv in the qm9pack layout.
    """
    if cfg.data.get("splits_dir"):
        root = Path(cfg.data.splits_dir)
        return (
            read_qm9pack_csv(sorted((root / "train").glob("*.csv"))),
            read_qm9pack_csv([root / "val.csv"]),
            read_qm9pack_csv([root / "test.csv"]),
        )
    molecules = subsample(load_qm9(cfg.data), cfg.data.limit, cfg.seed)
    tr, va, te = split(len(molecules), cfg.data.val_frac, cfg.data.test_frac, cfg.seed)
    return [molecules[i] for i in tr], [molecules[i] for i in va], [molecules[i] for i in te]


def build_model(cfg: DictConfig, train_set: list[Data]) -> EnergyModel:
    """A fresh EnergyModel (reference fitted on train_set), or the one in cfg.init_from."""
    net = instantiate(cfg.model.net)
    elements = list(cfg.data.elements)
    max_z = int(cfg.model.net.max_z)
    init = cfg.get("init_from")
    if init:
        # Fine-tuning keeps the previous reference and scale: the residual it learned stays valid.
        model = EnergyModel(net, torch.zeros(max_z, dtype=torch.float64))
        model.load_state_dict(torch.load(Path(init) / "state_dict.pt", weights_only=True))
        return model
    atomref = fit_reference(train_set, elements, max_z)
    counts = element_counts(train_set, elements)
    y = torch.cat([m.y for m in train_set])
    residual = y - counts @ atomref[torch.tensor(elements)]
    return EnergyModel(net, atomref, residual_scale=float(residual.std()))


def example_batch(molecules: list[Data]) -> Any:
    """A small real batch for the export parity check."""
    return next(iter(loader(molecules[:4], 4)))


def check_forces(path: Path, model: EnergyModel, b: Any) -> None:
    """The scripted file's forces equal eager autograd forces: the served forces path works."""
    scripted = torch.jit.load(str(path))
    e1, f1 = scripted(b.z, b.pos, b.batch, True)
    e2, f2 = model(b.z, b.pos, b.batch, True)
    torch.testing.assert_close(e1, e2)
    torch.testing.assert_close(f1, f2, atol=1e-4, rtol=1e-4)
    assert f1.shape == b.pos.shape


def fit(cfg: DictConfig, train_set: list[Data], val_set: list[Data]) -> tuple[Any, L.Trainer]:
    """A fresh (or cfg.init_from) model fitted on train_set, the weights of its best val_mae."""
    model = build_model(cfg, train_set)
    bs = cfg.data.batch_size
    train_loader = loader(train_set, bs, shuffle=True)
    val_loader = loader(val_set, cfg.data.eval_batch_size)
    steps = len(train_loader) * cfg.trainer.max_epochs
    module = EnergyRegressor(
        model,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        loss=cfg.optim.get("loss", "l1"),
        warmup_steps=min(cfg.optim.get("warmup_steps", 0), steps // 10),
        total_steps=steps,
        min_lr_frac=cfg.optim.get("min_lr_frac", 0.0),
        anneal_by_s=cfg.optim.get("anneal_by_s"),
    )
    trainer = make_trainer(cfg, [BestWeights("val_mae", "min")])
    trainer.fit(module, train_loader, val_loader)
    return module, trainer


def validation_score(cfg: DictConfig, report: Callable[[int, float], None]) -> float:
    """A study's objective (train.tune): the validation MAE in meV of a fit on the first
    `tune.train_molecules` molecules of the fixed training split, scored on the first
    `tune.val_molecules` of the validation split. The test split is never scored.
    `tune.repeat` (k > 0, train.tune's recheck) seeds the fit anew on the same molecules."""
    L.seed_everything(cfg.seed, workers=True)
    train_set, val_set, _ = load_splits(cfg)
    val_set = val_set[: cfg.tune.val_molecules]
    L.seed_everything(cfg.seed + 100 * int(cfg.tune.get("repeat", 0)), workers=True)
    module, trainer = fit(cfg, train_set[: cfg.tune.train_molecules], val_set)
    finish_logger(trainer)
    mae = float(evaluate(module.model.cpu().eval(), val_set, 256)["mae_mev"])
    report(0, mae)
    return mae


def run(cfg: DictConfig) -> dict[str, Any]:
    """config -> data -> model -> fit -> evaluate -> export; returns the metrics."""
    started = time.monotonic()
    L.seed_everything(cfg.seed, workers=True)
    train_set, val_set, test_set = load_splits(cfg)
    module, trainer = fit(cfg, train_set, val_set)
    train_seconds = time.monotonic() - started

    model = module.model.cpu().eval()
    val, test = evaluate(model, val_set, 256), evaluate(model, test_set, 256)
    parity = Path(cfg.paths.artifacts) / "parity.png"
    plot_parity(*energies(model, test_set, 256), cfg.name, parity)
    finish_logger(trainer, [parity])
    metrics = {
        "model": cfg.name,
        "dataset": cfg.data.name,
        "target": "U0",
        "unit": "meV",
        "test_mae_mev": test["mae_mev"],
        "baseline_test_mae_mev": test["baseline_mae_mev"],
        "val_mae_mev": val["mae_mev"],
        "baseline_val_mae_mev": val["baseline_mae_mev"],
        "n_train": len(train_set),
        "n_val": len(val_set),
        "n_test": len(test_set),
        "epochs": trainer.current_epoch,
        "train_seconds": round(train_seconds, 1),
        "fine_tuned_from": cfg.get("init_from"),
        "seed": cfg.seed,
    }
    net_cfg = OmegaConf.to_container(cfg.model.net, resolve=True)
    elements = list(cfg.data.elements)
    meta = {
        "name": cfg.name,
        "task": "molecular_energy",
        "target": "U0",
        "units": {"energy": "eV", "forces": "eV/Angstrom", "pos": "Angstrom"},
        "elements": {SYMBOL[z]: z for z in elements},
        "atomref_ev": {SYMBOL[z]: float(model.atomref[z]) for z in elements},
        # The neighbour list holds at most max_num_neighbors pairs per atom on average, so a
        # molecule may have at most that many atoms; the handler's max_atoms must not exceed it.
        "max_atoms": int(net_cfg["max_num_neighbors"]),
        "cutoff_angstrom": float(net_cfg["cutoff_upper"]),
        "inputs": ["z", "pos", "batch", "forces"],
        "outputs": ["energy (B,) float64 eV", "forces (N, 3) eV/Angstrom or empty"],
        "model_cfg": net_cfg,
        "data_version": cfg.get("data_version"),
    }
    b = example_batch(test_set)
    out = Path(cfg.paths.artifacts)
    export_torchscript(model, (b.z, b.pos, b.batch, False), out, meta, metrics)
    check_forces(out / "model.pt", model, b)
    write_qm9_reference(model, train_set, out, cfg.name, elements, cfg.seed)
    log.info("%s", json.dumps(metrics))
    return metrics


@torch.no_grad()
def write_qm9_reference(
    model: EnergyModel, molecules: list[Data], out: Path, name: str, elements: list[int], seed: int
) -> None:
    """The drift reference: sampled training molecules with their embedding and the predicted
    energy per atom (eV; total energies scale with size, per atom they compare across sizes)."""
    picked = [molecules[i] for i in sample(len(molecules), seed)]
    stats, emb, per_atom, _ = monitor_inputs(model, picked, elements)
    write_reference(out, name, stats, emb, per_atom)


@torch.no_grad()
def monitor_inputs(
    model: Any, molecules: list[Data], elements: list[int]
) -> tuple[list[dict[str, Any]], Tensor, list[float], Tensor]:
    """What the drift monitor sees of each molecule, as the handler logs it: its input
    statistics, the model's embedding (M, H) and energy per atom (eV); and the energies (M,).

    `model` is an EnergyModel or its scripted model.pt (the online loop scores shards with it).
    """
    model.eval()
    emb, energies = [], []
    batches = list(loader(molecules, 64))
    for b in batches:
        emb.append(model.embed(b.z, b.pos, b.batch))
        energies.append(model(b.z, b.pos, b.batch, False)[0])
    energy = torch.cat(energies)
    atoms = torch.cat([torch.bincount(b.batch) for b in batches])
    stats = [molecule_stats(m.z, m.pos, elements) for m in molecules]
    return stats, torch.cat(emb), (energy / atoms).tolist(), energy


def reexport(cfg: DictConfig) -> dict[str, Any]:
    """Exports artifacts/<name>/state_dict.pt again with today's model code, no training.

    The scripted model.pt holds the code of its modules: after a change to train/qm9/model.py
    (e.g. the plain-torch neighbour list), this rebuilds it from the saved weights, checks the
    test MAE and the forces again, and keeps meta.json's fields and metrics.json's figures.
    """
    out = Path(cfg.paths.artifacts)
    meta = json.loads((out / "meta.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    _, _, test_set = load_splits(cfg)
    model = EnergyModel(instantiate(cfg.model.net), torch.zeros(int(cfg.model.net.max_z)))
    model.load_state_dict(torch.load(out / "state_dict.pt", weights_only=True))
    model.eval()
    test = evaluate(model, test_set, 256)
    if abs(test["mae_mev"] - metrics["test_mae_mev"]) > 0.05:
        raise RuntimeError(f"re-exported test MAE {test['mae_mev']} != {metrics['test_mae_mev']}")
    b = example_batch(test_set)
    export_torchscript(model, (b.z, b.pos, b.batch, False), out, meta, metrics)
    check_forces(out / "model.pt", model, b)
    return {"model": cfg.name, "test_mae_mev": test["mae_mev"], "artifact": str(out)}
