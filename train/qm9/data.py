"""QM9 as PyG `Data`: the one reader for the qm9pack CSV layout, plus PyG's own QM9 download.

Sources (data config `source`):
- `mirror`: `<DATA_MIRROR>/QM9/qm9_subset10k.csv`, a real 10,000-molecule subset (qm9pack layout).
- `qm9pack`: the optional PyPI package `qm9pack`, whose `data/qm9_part{1,2,3}.csv` hold all
  130,831 molecules in that layout.
- `pyg`: `torch_geometric.datasets.QM9`, downloaded from its upstream (needs the internet).
- `auto`: the first of mirror, qm9pack, pyg that is available.

Every molecule becomes `Data(z, pos, y, idx)`: atomic numbers (N,), positions (N, 3) in Å, U0 in
eV (1,) and the gdb index. Molecules are ordered by gdb index, so splits do not depend on the
source's row order.
"""

import csv
import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from train.core.mirror import link_from_mirror, mirror_dir

log = logging.getLogger(__name__)

# CODATA 2018, the factor PyG's QM9 uses, so both sources give the same eV.
HARTREE_TO_EV = 27.211386246
SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
QM9PACK_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
PYG_U0 = 7  # column of U0 (eV) in torch_geometric.datasets.QM9's y


def parse_row(row: dict[str, str]) -> tuple[list[int], list[list[float]], float, int]:
    """One qm9pack CSV row to (z, pos in Å, U0 in eV, gdb index); raises ValueError if broken."""
    elements = json.loads(row["Elements"].replace("'", '"'))
    pos = json.loads(row["XYZ_Ang"])
    if len(elements) != len(pos) or len(elements) != int(row["N_atoms"]):
        raise ValueError(f"row {row.get('Index')}: Elements, XYZ_Ang and N_atoms disagree")
    z = [SYMBOLS[e] for e in elements]
    return z, pos, float(row["InternalEnergy_0K_au"]) * HARTREE_TO_EV, int(row["Index"])


def read_qm9pack_csv(paths: Sequence[str | Path]) -> list[Data]:
    """Reads qm9pack-layout CSV files (`Elements`, `XYZ_Ang` in Å, `InternalEnergy_0K_au` in Ha)."""
    csv.field_size_limit(1 << 26)
    out = []
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                z, pos, u0, idx = parse_row(row)
                out.append(
                    Data(
                        z=torch.tensor(z, dtype=torch.long),
                        pos=torch.tensor(pos, dtype=torch.float32),
                        y=torch.tensor([u0], dtype=torch.float64),
                        idx=torch.tensor([idx]),
                    )
                )
    out.sort(key=lambda d: int(d.idx))
    return out


def qm9pack_files() -> Optional[list[Path]]:
    """The CSV files of the installed qm9pack package, or None when it is not installed."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = [data / p for p in QM9PACK_PARTS]
    return files if all(f.is_file() for f in files) else None


def read_pyg(root: str | Path) -> list[Data]:
    """PyG's QM9 (downloads on first use) reduced to z, pos, U0 in eV and the gdb index."""
    from torch_geometric.datasets import QM9

    ds = QM9(str(Path(root) / "QM9" / "pyg"))
    out = []
    for i in range(len(ds)):
        d = ds[i]
        gdb = int(str(d.name).rsplit("_", 1)[-1]) if hasattr(d, "name") else i + 1
        out.append(
            Data(
                z=d.z,
                pos=d.pos,
                y=d.y[0, PYG_U0 : PYG_U0 + 1].double(),
                idx=torch.tensor([gdb]),
            )
        )
    return out


def resolve_source(cfg: Any) -> tuple[str, list[Path]]:
    """Picks the source named by cfg.source (auto: mirror, then qm9pack, then pyg)."""
    source = cfg.get("source", "auto")
    if source in ("auto", "mirror") and mirror_dir(cfg.mirror) is not None:
        if link_from_mirror(cfg.csv, cfg.root, cfg.mirror):
            return "mirror", [Path(cfg.root) / cfg.csv]
    if source == "mirror":
        local = Path(cfg.root) / cfg.csv
        if local.exists():  # linked by an earlier `make data`
            return "mirror", [local]
        raise FileNotFoundError(f"source=mirror but no {cfg.csv} under DATA_MIRROR or {cfg.root}")
    if source in ("auto", "qm9pack"):
        files = qm9pack_files()
        if files:
            return "qm9pack", files
        if source == "qm9pack":
            raise ModuleNotFoundError("source=qm9pack but the qm9pack package is not installed")
    if source in ("auto", "pyg"):
        return "pyg", []
    raise ValueError(f"unknown QM9 source {source!r}: auto, mirror, qm9pack or pyg")


def load_qm9(cfg: Any) -> list[Data]:
    """All molecules of the configured source, cached as tensors under <root>/QM9/processed/."""
    source, files = resolve_source(cfg)
    cache = Path(cfg.root) / "QM9" / "processed" / f"{source}_{_files_key(files)}.pt"
    if cache.exists():
        return unpack(torch.load(cache, weights_only=True))
    molecules = read_pyg(cfg.root) if source == "pyg" else read_qm9pack_csv(files)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(pack(molecules), cache)
    log.info("QM9 from %s: %d molecules", source, len(molecules))
    return molecules


def _files_key(files: list[Path]) -> str:
    if not files:
        return "all"
    stats = [(f.name, f.stat().st_size) for f in files]
    return f"{len(files)}f_{sum(s for _, s in stats)}b_{stats[0][0].removesuffix('.csv')}"


def pack(molecules: Sequence[Data]) -> dict[str, Tensor]:
    """Concatenated tensors with a pointer vector: fast to save and load."""
    counts = torch.tensor([m.z.numel() for m in molecules])
    return {
        "z": torch.cat([m.z for m in molecules]),
        "pos": torch.cat([m.pos for m in molecules]),
        "ptr": torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]),
        "y": torch.cat([m.y for m in molecules]),
        "idx": torch.cat([m.idx for m in molecules]),
    }


def unpack(t: dict[str, Tensor]) -> list[Data]:
    """Inverse of `pack`."""
    ptr = t["ptr"].tolist()
    return [
        Data(
            z=t["z"][a:b],
            pos=t["pos"][a:b],
            y=t["y"][i : i + 1],
            idx=t["idx"][i : i + 1],
        )
        for i, (a, b) in enumerate(zip(ptr[:-1], ptr[1:]))
    ]


def split(
    n: int, val_frac: float, test_frac: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """A fixed random split of range(n) into train, val and test index lists."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val, n_test = round(n * val_frac), round(n * test_frac)
    return perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]


def subsample(molecules: list[Data], limit: Optional[int], seed: int) -> list[Data]:
    """A random subset of `limit` molecules (kept in gdb order); all of them when limit is None."""
    if limit is None or limit >= len(molecules):
        return molecules
    keep = torch.randperm(len(molecules), generator=torch.Generator().manual_seed(seed))[:limit]
    return [molecules[i] for i in sorted(keep.tolist())]


def loader(molecules: Sequence[Data], batch_size: int, shuffle: bool = False) -> DataLoader:
    """A PyG DataLoader: each batch is one disjoint union with a `batch` vector."""
    return DataLoader(list(molecules), batch_size=batch_size, shuffle=shuffle)


def element_counts(molecules: Sequence[Data], elements: Sequence[int]) -> Tensor:
    """(M, E) counts of each element per molecule, float64 for the linear fit."""
    col = {z: j for j, z in enumerate(elements)}
    counts = torch.zeros(len(molecules), len(elements), dtype=torch.float64)
    for i, m in enumerate(molecules):
        for z in m.z.tolist():
            counts[i, col[z]] += 1
    return counts


def prepare_qm9(data_cfg: Any) -> str:
    """`prepare` hook of configs/data/qm9.yaml (`make data`): links or downloads, then caches."""
    molecules = load_qm9(data_cfg)
    return f"{data_cfg.name}: {len(molecules)} molecules from {resolve_source(data_cfg)[0]}"


CSV_COLUMNS = ["XYZ_file", "Index", "N_atoms", "Elements", "XYZ_Ang", "InternalEnergy_0K_au"]


def write_qm9pack_csv(molecules: Sequence[Data], path: str | Path) -> Path:
    """Writes molecules in the qm9pack layout (the columns `read_qm9pack_csv` needs)."""
    names = {z: s for s, z in SYMBOLS.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for m in molecules:
            idx = int(m.idx)
            elements = "[" + ",".join(f"'{names[z]}'" for z in m.z.tolist()) + "]"
            w.writerow(
                [
                    f"dsgdb9nsd_{idx:06d}.xyz",
                    idx,
                    m.z.numel(),
                    elements,
                    json.dumps(m.pos.tolist()),
                    repr(float(m.y) / HARTREE_TO_EV),
                ]
            )
    return path
