"""Dataset access: a local mirror first (DATA_MIRROR), else the dataset's own download."""

import logging
import os
from pathlib import Path
from typing import Any, Optional

from torch_geometric.datasets import Planetoid, TUDataset
from torch_geometric.transforms import NormalizeFeatures

log = logging.getLogger(__name__)


def mirror_dir(mirror: Optional[str] = None) -> Optional[Path]:
    """Returns the mirror directory from the argument or DATA_MIRROR, if it exists."""
    value = mirror or os.environ.get("DATA_MIRROR")
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"DATA_MIRROR={value} is not a directory")
    return path


def link_from_mirror(relative: str, root: str | Path, mirror: Optional[str] = None) -> bool:
    """Symlinks each file of <mirror>/<relative> into <root>/<relative>; never writes the mirror.

    Returns True when the mirror held that folder, so the caller's loader finds its raw files
    and does not download.
    """
    src_root = mirror_dir(mirror)
    if src_root is None or not (src_root / relative).exists():
        return False
    src = src_root / relative
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for f in files:
        dst = Path(root) / relative / f.relative_to(src) if src.is_dir() else Path(root) / relative
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(f)
    log.info("linked %d file(s) of %s from mirror %s", len(files), relative, src_root)
    return True


def load_planetoid(
    name: str, root: str, mirror: Optional[str] = None, normalize: bool = True
) -> Planetoid:
    """Planetoid dataset (public split), with row-normalised features unless normalize=False."""
    link_from_mirror(f"{name}/raw", root, mirror)
    return Planetoid(
        root, name, split="public", transform=NormalizeFeatures() if normalize else None
    )


def prepare_planetoid(data_cfg: Any) -> str:
    """`prepare` hook of configs/data/cora.yaml: links or downloads, processes, summarises."""
    return f"{data_cfg.name}: {load_planetoid(data_cfg.name, data_cfg.root, data_cfg.mirror)[0]}"


def prepare_tu(data_cfg: Any) -> str:
    """`prepare` hook of configs/data/mutag.yaml."""
    return f"{data_cfg.name}: {len(load_tu(data_cfg.name, data_cfg.root, data_cfg.mirror))} graphs"


def load_tu(name: str, root: str, mirror: Optional[str] = None) -> TUDataset:
    """TU Dortmund graph dataset: one-hot node labels as x, one-hot edge labels as edge_attr."""
    link_from_mirror(f"{name}/raw", root, mirror)
    return TUDataset(root, name)
