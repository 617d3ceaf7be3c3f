"""QM9 molecules as qm9_et requests (JSON or .xyz): the `example` and `pool` hooks of qm9_et."""

import json
import random
from typing import Any

from torch_geometric.data import Data

from train.core.pools import Payload, json_payload
from train.qm9.data import SYMBOLS, load_qm9


def to_request(molecule: Data, as_atoms: bool = True, forces: bool = False) -> dict[str, Any]:
    """One molecule as a qm9_et JSON request: atom symbols (or z) and positions in Å."""
    names = {z: s for s, z in SYMBOLS.items()}
    z = molecule.z.tolist()
    request: dict[str, Any] = {"atoms": [names[v] for v in z]} if as_atoms else {"z": z}
    request["pos"] = molecule.pos.tolist()
    if forces:
        request["forces"] = True
    return request


def to_xyz(molecule: Data, comment: str = "") -> str:
    """One molecule as the text of a standard .xyz file (Å)."""
    names = {z: s for s, z in SYMBOLS.items()}
    lines = [str(molecule.z.numel()), comment]
    for z, (x, y, w) in zip(molecule.z.tolist(), molecule.pos.tolist()):
        lines.append(f"{names[z]:2s} {x:.10f} {y:.10f} {w:.10f}")
    return "\n".join(lines) + "\n"


def qm9_example(data_cfg: Any) -> tuple[str, str, bytes]:
    """`example` hook for qm9_et (`make examples`): a QM9 molecule of median size, as JSON."""
    molecules = load_qm9(data_cfg)
    sizes = sorted(m.z.numel() for m in molecules)
    median = sizes[len(sizes) // 2]
    molecule = next(m for m in molecules if m.z.numel() == median)
    return ".json", "application/json", json.dumps(to_request(molecule)).encode()


def qm9_pool(data_cfg: Any, size: int, rng: random.Random) -> list[Payload]:
    """Random QM9 molecules (3 to 29 atoms): JSON with atom symbols or atomic numbers, some as
    .xyz text (their Vertex instance is the JSON form), a few asking for forces too."""
    molecules = load_qm9(data_cfg)
    pool = []
    for i in rng.sample(range(len(molecules)), min(size, len(molecules))):
        m, roll = molecules[i], rng.random()
        if roll < 0.8:
            forces = rng.random() < 0.1
            pool.append(json_payload(to_request(m, as_atoms=roll < 0.6, forces=forces)))
        else:
            body = to_xyz(m, comment=f"gdb {int(m.idx)}").encode()
            pool.append(Payload(".xyz", "chemical/x-xyz", body, json_payload(to_request(m)).body))
    return pool
