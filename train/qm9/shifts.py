"""QM9 held out and shifted: the `shifts` hook of qm9_et.

- coordinate noise: Gaussian noise of sigma Å on every position (the truth stays the
  unperturbed molecule's U0, so the MAE shows how much the answer moves);
- rotation by a random axis and an angle up to the severity, and translation by the severity
  in Å: the energy is invariant, so the answer must not move and the monitor must not flag;
- larger molecules: two test molecules side by side, 10 Å apart (beyond the model's 4 Å cutoff,
  so the truth is the sum of their U0), of at least the severity's atom count in all. Training
  molecules have at most 29 atoms and the handler takes 32 (the neighbour list's capacity).
"""

import math
import random
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from train.core.shifts import Case, Shift, ShiftSet, json_case
from train.qm9.data import load_qm9, split, subsample
from train.qm9.requests import to_request

GAP = 10.0  # Å between two merged molecules
MAX_ATOMS = 32  # handlers/molecule_energy.py's max_atoms


def rotation(angle_deg: float, gen: torch.Generator) -> Tensor:
    """(3, 3) rotation about a random axis by a random angle of at most `angle_deg`."""
    axis = torch.randn(3, generator=gen, dtype=torch.float64)
    axis = axis / axis.norm()
    theta = math.radians(angle_deg) * float(torch.rand(1, generator=gen, dtype=torch.float64))
    k = torch.tensor(
        [[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]],
        dtype=torch.float64,
    )
    return torch.eye(3, dtype=torch.float64) + math.sin(theta) * k + (1 - math.cos(theta)) * k @ k


def moved(m: Data, pos: Tensor) -> Data:
    return Data(z=m.z, pos=pos.to(m.pos.dtype), y=m.y)


def noise(m: Data, sigma: float, gen: torch.Generator) -> Data:
    return moved(m, m.pos + sigma * torch.randn(m.pos.shape, generator=gen, dtype=m.pos.dtype))


def rotate(m: Data, angle: float, gen: torch.Generator) -> Data:
    centre = m.pos.double().mean(0)
    return moved(m, (m.pos.double() - centre) @ rotation(angle, gen).T + centre)


def translate(m: Data, distance: float, gen: torch.Generator) -> Data:
    direction = torch.randn(3, generator=gen, dtype=torch.float64)
    return moved(m, m.pos.double() + distance * direction / direction.norm())


def merge(a: Data, b: Data) -> Data:
    """b placed GAP Å beyond a's extent along x: one request of both, truth the sum."""
    shift = float(a.pos[:, 0].max() - b.pos[:, 0].min()) + GAP
    pos_b = b.pos.clone()
    pos_b[:, 0] += shift
    return Data(z=torch.cat([a.z, b.z]), pos=torch.cat([a.pos, pos_b]), y=a.y + b.y)


def qm9_shifts(data_cfg: Any, size: int, rng: random.Random) -> ShiftSet:
    """`size` test molecules of the split training used (configs/train.yaml's seed 42)."""
    molecules = subsample(load_qm9(data_cfg), data_cfg.limit, 42)
    _, _, test_idx = split(len(molecules), data_cfg.val_frac, data_cfg.test_frac, 42)
    test = [molecules[i] for i in test_idx]
    picks = [test[i] for i in sorted(rng.sample(range(len(test)), min(size, len(test))))]
    seed = rng.randrange(2**31)

    def case(m: Data) -> Case:
        return json_case(to_request(m), float(m.y.view(-1)[0]))

    def make(fn: Any) -> Any:
        def at(severity: float) -> list[Case]:
            gen = torch.Generator().manual_seed(seed)
            return [case(fn(m, severity, gen)) for m in picks]

        return at

    def larger(min_atoms: float) -> list[Case]:
        pick = random.Random(seed)
        out = []
        for a in picks:
            partners = [b for b in test if min_atoms <= a.z.numel() + b.z.numel() <= MAX_ATOMS]
            if a.z.numel() < MAX_ATOMS and partners:
                out.append(case(merge(a, pick.choice(partners))))
        return out

    return ShiftSet(
        clean=[case(m) for m in picks],
        shifts={
            "coord_noise": Shift([0.02, 0.05, 0.1], make(noise), unit="Å"),
            "rotation": Shift([30.0, 90.0, 180.0], make(rotate), unit="°", invariant=True),
            "translation": Shift([1.0, 10.0, 100.0], make(translate), unit="Å", invariant=True),
            "larger": Shift([24.0, 28.0, 30.0], larger, unit="atoms"),
        },
        metric="mae_mev",
    )
