"""Validation of molecule requests (z or atom symbols + positions, or XYZ text) into tensors."""

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from request_error import RequestError
from torch import Tensor

from contract import MoleculeRequest, validate

# Symbols by atomic number, for messages and for reading XYZ files whatever the model knows.
PERIODIC = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se "
    "Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe"
).split()
XYZ_TYPES = ("text/plain", "chemical/x-xyz", "text/x-xyz")

# Ethanol (Å), a small real-geometry molecule: the handler's warm-up request and the online
# loop's drain request to a retiring version. Only shapes and code paths matter, not chemistry.
WARMUP_Z = [6, 6, 8, 1, 1, 1, 1, 1, 1]
WARMUP_POS = [
    [-0.0118, 1.5136, 0.0],
    [0.0, 0.0, 0.0],
    [-1.3383, -0.4726, 0.0],
    [1.0214, 1.8959, 0.0],
    [-0.5311, 1.8845, 0.8841],
    [-0.5311, 1.8845, -0.8841],
    [0.5159, -0.3665, 0.8913],
    [0.5159, -0.3665, -0.8913],
    [-1.3433, -1.4370, 0.0],
]


# Interatomic distances binned by 0.5 Å, the last bin open from 7.5 Å (QM9's molecules span
# at most about 10 Å): the drift profile's distance histogram.
DISTANCE_BINS = [0.5 * i for i in range(17)]


@dataclass
class Molecule:
    """One parsed request: atomic numbers (N,), positions (N, 3) in Å, whether to send forces."""

    z: Tensor
    pos: Tensor
    forces: bool = False


@dataclass
class Limits:
    """What the handler accepts (model-config.yaml `handler:` section and meta.json)."""

    elements: dict[str, int]
    max_atoms: int
    min_distance: float
    max_abs_coordinate: float


def _known(limits: Limits) -> str:
    return ", ".join(f"{s} ({z})" for s, z in sorted(limits.elements.items(), key=lambda e: e[1]))


def _count(n: int, field: str, limits: Limits) -> None:
    if n == 0:
        raise RequestError(field, "zero atoms: at least one atom is required")
    if n > limits.max_atoms:
        # 413 like too many nodes of a graph: the request is well-formed, only too large.
        raise RequestError(field, f"{n} atoms exceeds the limit of {limits.max_atoms}", 413)


def atomic_numbers(value: list[int], limits: Limits) -> Tensor:
    """`z` (ints: the contract's): atomic numbers of elements the model was trained on."""
    _count(len(value), "z", limits)
    known = torch.tensor(sorted(set(limits.elements.values())), dtype=torch.long)
    try:
        z = torch.tensor(value, dtype=torch.long)
    except (RuntimeError, ValueError, OverflowError):  # beyond 64 bits: no element
        z = torch.tensor([v if abs(v) < 2**63 else -1 for v in value], dtype=torch.long)
    unknown = (~torch.isin(z, known)).nonzero()
    if len(unknown):
        j = int(unknown[0])
        v = value[j]
        name = f" ({PERIODIC[v - 1]})" if 1 <= v <= len(PERIODIC) else ""
        raise RequestError(
            "z",
            f"z[{j}] = {str(v)[:24]}{name} is not an element this model knows: {_known(limits)}",
        )
    return z


def symbols(value: Any, limits: Limits, field: str = "atoms") -> Tensor:
    """`atoms`: a list of element symbols ("C", "H", ...) of elements the model was trained on."""
    if not isinstance(value, list):
        raise RequestError(field, f"must be a list of element symbols, got {type(value).__name__}")
    _count(len(value), field, limits)
    z = []
    for j, s in enumerate(value):
        sym = s.strip().capitalize() if isinstance(s, str) else None
        if sym not in limits.elements:
            raise RequestError(
                field, f"{field}[{j}] = {s!r} is not an element this model knows: {_known(limits)}"
            )
        z.append(limits.elements[sym])
    return torch.tensor(z, dtype=torch.long)


def positions(value: list[list[float]], n: int, atoms_field: str, limits: Limits) -> Tensor:
    """`pos`: n rows of [x, y, z] in Å (rows of 3 numbers: the contract's), finite, bounded,
    and no two atoms implausibly close."""
    if len(value) != n:
        raise RequestError(
            "pos", f"has {len(value)} rows but {atoms_field} has {n} atoms: they must match"
        )
    pos = torch.tensor(value, dtype=torch.float64)  # (N, 3)
    nonfinite = (~torch.isfinite(pos)).nonzero()
    if len(nonfinite):
        i, j = (int(v) for v in nonfinite[0])
        raise RequestError("pos", f"pos[{i}][{j}] = {float(pos[i, j])} is not finite")
    far = (pos.abs() > limits.max_abs_coordinate).nonzero()
    if len(far):
        i, j = (int(v) for v in far[0])
        raise RequestError(
            "pos", f"pos[{i}][{j}] = {float(pos[i, j])} is beyond ±{limits.max_abs_coordinate} Å"
        )
    check_distances(pos, limits.min_distance)
    return pos.to(torch.float32)


def check_distances(pos: Tensor, min_distance: float) -> None:
    """Raises when two atoms are closer than min_distance Å, naming the first such pair."""
    if pos.size(0) < 2:
        return
    d = torch.cdist(pos, pos)  # (N, N)
    d.fill_diagonal_(math.inf)
    close = (d < min_distance).nonzero()
    if len(close):
        i, j = (int(v) for v in close[0])
        raise RequestError(
            "pos",
            f"atoms {i} and {j} are {float(d[i, j]):.3f} Å apart, closer than the physical "
            f"minimum of {min_distance} Å",
        )


def molecule_stats(z: Tensor, pos: Tensor, elements: list[int]) -> dict[str, Any]:
    """The drift monitor's input statistics of one molecule: atom count, element mix (the share
    of each of `elements`), the interatomic-distance histogram (shares per DISTANCE_BINS bin),
    and `h_bond_spread`, the standard deviation in Å of its hydrogens' nearest-neighbour
    distances (0 with fewer than two hydrogens).

    QM9's geometries are relaxed (DFT), so every C-H, N-H and O-H bond sits at its length and
    the spread is a few hundredths of an Å at most; coordinates from a cruder source, or noisy
    ones, spread it long before the coarse histogram moves.

    The handler's payload log and training's reference profile (train/core/reference.py) both
    call this function.
    """
    n = int(z.numel())
    mix = [float((z == e).sum()) / max(n, 1) for e in elements]
    hist = [0.0] * (len(DISTANCE_BINS) - 1)
    spread = 0.0
    if n > 1:
        i, j = torch.triu_indices(n, n, offset=1)
        d = (pos[i] - pos[j]).double().norm(dim=-1)  # (N(N-1)/2,)
        edges = torch.tensor(DISTANCE_BINS[1:-1], dtype=torch.float64)
        counts = torch.bincount(torch.bucketize(d, edges, right=True), minlength=len(hist))
        hist = (counts.double() / d.numel()).tolist()
        hydrogens = (z == 1).nonzero().flatten()
        if hydrogens.numel() > 1:
            full = torch.cdist(pos[hydrogens].double(), pos.double())  # (H, N)
            full[torch.arange(hydrogens.numel()), hydrogens] = float("inf")  # not itself
            spread = float(full.min(dim=1).values.std(unbiased=False))
    return {"atoms": float(n), "elements": mix, "distances": hist, "h_bond_spread": spread}


def flag(value: Any, field: str = "forces") -> bool:
    """An optional boolean: true/false in JSON, or true/false/1/0 as a query parameter."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0"):
        return value.strip().lower() in ("true", "1")
    raise RequestError(field, f"must be true or false, got {value!r}")


def from_json(payload: dict[str, Any], limits: Limits) -> Molecule:
    """`{"z" | "atoms": [...], "pos": [[x, y, z], ...], "forces": false}` to a Molecule."""
    req = validate(payload, MoleculeRequest)
    if req.z is not None and req.atoms is not None:
        raise RequestError("z", "send either `z` (atomic numbers) or `atoms` (symbols), not both")
    if req.z is not None:
        field, z = "z", atomic_numbers(req.z, limits)
    elif req.atoms is not None:
        field, z = "atoms", symbols(req.atoms, limits)
    else:
        raise RequestError("z", "missing: send `z` (atomic numbers) or `atoms` (symbols)")
    if req.pos is None:
        raise RequestError("pos", "missing: send `pos`, one [x, y, z] in Å per atom")
    pos = positions(req.pos, len(z), field, limits)
    return Molecule(z, pos, bool(req.forces))


def from_xyz(text: str, limits: Limits) -> Molecule:
    """The standard .xyz format: atom count, a comment line, then `symbol x y z` per atom (Å)."""
    lines = text.strip("\n").splitlines()
    if not lines or not lines[0].strip():
        raise RequestError("xyz", "empty: line 1 must be the number of atoms")
    try:
        n = int(lines[0].strip())
    except ValueError:
        raise RequestError(
            "xyz", f"line 1 must be the number of atoms, got {lines[0].strip()[:40]!r}"
        ) from None
    if n < 0:
        raise RequestError("xyz", f"line 1: negative atom count {n}")
    _count(n, "xyz", limits)
    body = [ln for ln in lines[2:] if ln.strip()]
    if len(body) != n:
        raise RequestError(
            "xyz", f"line 1 declares {n} atoms but {len(body)} atom lines follow the comment"
        )
    syms, rows = [], []
    for k, line in enumerate(body):
        parts = line.split()
        if len(parts) < 4:
            raise RequestError("xyz", f"line {k + 3}: expected `symbol x y z`, got {line[:60]!r}")
        sym = parts[0]
        if sym.isdigit():  # some writers put the atomic number instead of the symbol
            zi = int(sym)
            sym = PERIODIC[zi - 1] if 1 <= zi <= len(PERIODIC) else sym
        try:
            row = [float(v) for v in parts[1:4]]
        except ValueError:
            raise RequestError(
                "xyz", f"line {k + 3}: coordinates {' '.join(parts[1:4])!r} are not numbers"
            ) from None
        syms.append(sym)
        rows.append(row)
    try:
        z = symbols(syms, limits, "xyz")
        pos = positions(rows, n, "xyz", limits)
    except RequestError as e:
        # Name the line, not the JSON-style index: pos[i] / xyz[i] is line i + 3.
        raise RequestError("xyz", _xyz_lines(e.problem)) from None
    return Molecule(z, pos)


def _xyz_lines(problem: str) -> str:
    """Rewrites `pos[i][j]` / `xyz[i]` references of a message as XYZ line numbers."""
    problem = re.sub(r"pos\[(\d+)\]\[\d+\]", lambda m: f"line {int(m.group(1)) + 3}", problem)
    problem = re.sub(r"xyz\[(\d+)\]", lambda m: f"line {int(m.group(1)) + 3}", problem)
    return problem
