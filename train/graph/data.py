"""Graph datasets (Planetoid, TU Dortmund): from the data mirror first, else their own download."""

from typing import Any, Optional

from torch_geometric.datasets import Planetoid, TUDataset
from torch_geometric.transforms import NormalizeFeatures

from train.core.mirror import link_from_mirror


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
