"""TorchServe handler for molecular energy (qm9_et): total U0 and optional forces.

Requests, positions in Å:
    application/json  {"z": [6, 1, 1, 1, 1], "pos": [[x, y, z], ...]}   atomic numbers, or
                      {"atoms": ["C", "H", "H", "H", "H"], "pos": [...]} element symbols,
                      optional "forces": true; {"instances": [...]} batches several molecules
    text/plain        a standard .xyz file (atom count, comment line, `symbol x y z` lines)
    An `X-Forces: true` header asks for forces with either body (TorchServe 0.12 does not pass
    URL query parameters to handlers).
Response:
    {"energy": -1101.48, "unit": "eV"}, plus "forces": [[fx, fy, fz], ...] in eV/Å (-dE/dpos)
    when asked.
"""

import logging
import math
import time
from typing import Any

import torch
from model_metrics import ATOMS, ENERGY_PER_ATOM, MAX_FORCE, Observed
from torch import Tensor

from json_batch_handler import JsonBatchHandler, RequestError
from molecule_request import (
    WARMUP_POS,
    WARMUP_Z,
    XYZ_TYPES,
    Limits,
    Molecule,
    flag,
    from_json,
    from_xyz,
    molecule_stats,
)

log = logging.getLogger(__name__)


class MoleculeEnergyHandler(JsonBatchHandler):
    """Predicts U0 (eV) for each molecule; a TorchServe batch runs as one ET forward pass."""

    defaults = {
        **JsonBatchHandler.defaults,
        "max_atoms": 32,
        "min_distance": 0.5,
        "max_abs_coordinate": 1000.0,
        "max_body_bytes": 1048576,
    }
    bodies = {
        "application/json": "read_json",
        "": "read_json",
        **{t: "read_xyz" for t in XYZ_TYPES},
    }
    # Every molecule size is a new input shape: the profiling executor would re-optimise the
    # graph for each, up to a second per new size on CPU, and gains nothing (no CPU fuser).
    jit_optimize = False

    def initialize(self, context: Any) -> None:
        """Loads model and meta, checks the limits against the model, then warms up."""
        super().initialize(context)
        if self.config["max_atoms"] > self.meta["max_atoms"]:
            raise ValueError(
                f"handler max_atoms {self.config['max_atoms']} exceeds the model's neighbour-list"
                f" capacity {self.meta['max_atoms']} (meta.json)"
            )
        self.limits = Limits(
            elements=dict(self.meta["elements"]),
            max_atoms=int(self.config["max_atoms"]),
            min_distance=float(self.config["min_distance"]),
            max_abs_coordinate=float(self.config["max_abs_coordinate"]),
        )
        self.warmup_seconds = self.warm_up()

    def warm_up(self) -> float:
        """Runs the request path (parse, one batch, energy and forces) before READY.

        The first calls of each path (energy; energy and forces through autograd) allocate and
        set up what later calls reuse; that would otherwise land on the first user.
        """
        start = time.perf_counter()
        one = self.parse({"z": WARMUP_Z, "pos": WARMUP_POS})
        shifted = self.parse({"z": WARMUP_Z, "pos": [[c + 7.0 for c in p] for p in WARMUP_POS]})
        shifted.forces = True
        for items in ([one], [one, shifted], [one, one], [shifted]):
            self.predict(items)
        seconds = time.perf_counter() - start
        log.info("qm9 warm-up took %.2f s", seconds)
        return seconds

    def read_xyz(self, row: dict, idx: int) -> Molecule:
        """Reader of text/plain and chemical/x-xyz bodies: the text of an .xyz file."""
        body = self.read_text(row)
        if not isinstance(body, str):
            raise RequestError("xyz", "expected the text of an .xyz file")
        return from_xyz(body, self.limits)

    def amend(self, items: list[Molecule], row: dict, idx: int) -> None:
        """An `X-Forces` header asks for forces for every molecule of the request."""
        asked = self.header(idx, "X-Forces")
        if asked is not None and flag(asked, "X-Forces"):
            for m in items:
                m.forces = True

    def parse(self, payload: dict[str, Any]) -> Molecule:
        """One JSON molecule."""
        return from_json(payload, self.limits)

    def collate(self, items: list[Molecule]) -> tuple[Tensor, Tensor, Tensor, bool]:
        """All molecules as one disjoint union: z (N,), pos (N, 3), batch (N,), forces flag."""
        z = torch.cat([m.z for m in items])
        pos = torch.cat([m.pos for m in items])
        counts = torch.tensor([m.z.numel() for m in items])
        batch = torch.repeat_interleave(torch.arange(len(items)), counts)
        return z, pos, batch, any(m.forces for m in items)

    def respond(self, outputs: tuple[Tensor, Tensor], items: list[Molecule]) -> list[dict]:
        """One {"energy", "unit"[, "forces"]} per molecule."""
        energy, forces = outputs
        results, start = [], 0
        for i, m in enumerate(items):
            n = m.z.numel()
            out: dict[str, Any] = {"energy": float(energy[i]), "unit": "eV"}
            if m.forces:
                out["forces"] = forces[start : start + n].tolist()
                out["forces_unit"] = "eV/Angstrom"
            results.append(out)
            start += n
        return results

    def observe(self, items: list[Molecule], outputs: list[dict]) -> Observed:
        """Atoms of each molecule, its energy per atom, and its largest force norm if asked."""
        forces = [max(math.hypot(*f) for f in out["forces"]) for out in outputs if "forces" in out]
        energy = [out["energy"] / int(m.z.numel()) for m, out in zip(items, outputs)]
        values = {ENERGY_PER_ATOM: energy, **({MAX_FORCE: forces} if forces else {})}
        return Observed(sizes={ATOMS: sum(int(m.z.numel()) for m in items)}, values=values)

    def needs_grad(self, items: list[Molecule]) -> bool:
        """Forces are -dE/dpos: autograd records the forward when some molecule asks."""
        return any(m.forces for m in items)

    def headers(self) -> dict[str, str]:
        """X-Model-Version: which version answered (visible in a hot swap)."""
        return {
            "X-Model-Version": str(
                (self.context.manifest.get("model") or {}).get("modelVersion", "")
            )
        }

    def drift_stats(self, item: Molecule) -> dict[str, Any]:
        """Payload log: atoms, element mix, distance histogram (molecule_request.molecule_stats)."""
        return molecule_stats(item.z, item.pos, list(self.meta["elements"].values()))

    def drift_prediction(self, item: Molecule, result: dict[str, Any]) -> float:
        """Payload log: the predicted energy per atom (eV)."""
        return result["energy"] / item.z.numel()

    def drift_embeddings(self, items: list[Molecule]) -> Tensor:
        """(B, H): the model's `embed` over z, pos and batch (collate's forces flag dropped)."""
        z, pos, batch, _ = self.collate(items)
        device = getattr(self, "device", None) or "cpu"
        return self.model.embed(z.to(device), pos.to(device), batch.to(device))
