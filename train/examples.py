"""Real example requests built from the data directory (never committed; `make examples`).

Usage: python -m train.examples [--out examples]
"""

import argparse
import json
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_method
from torch_geometric.utils import k_hop_subgraph

from train.data import load_planetoid, load_tu

ROOT = Path(__file__).resolve().parent.parent

MUTAG_ATOMS = ["C", "N", "O", "F", "I", "Cl", "Br"]
MUTAG_BONDS = ["aromatic", "single", "double", "triple"]


def cora_request(data: Any, center: int, hops: int = 2, sparse: bool = True) -> dict[str, Any]:
    """The k-hop neighbourhood of one Cora node as a node-classification request.

    `data` must hold raw (unnormalised) features: the handler normalises like training did.
    The centre node is listed first in "nodes"; every node is returned when "nodes" is absent.
    """
    subset, edge_index, mapping, _ = k_hop_subgraph(
        center, hops, data.edge_index, relabel_nodes=True, num_nodes=data.num_nodes
    )
    x = data.x[subset]
    request: dict[str, Any] = {"edge_index": edge_index.tolist(), "nodes": [int(mapping[0])]}
    if sparse:
        request["x_sparse"] = [row.nonzero().view(-1).tolist() for row in x]
    else:
        request["x"] = x.tolist()
    return request


def mutag_request(graph: Any, as_atoms: bool = True) -> dict[str, Any]:
    """One MUTAG molecule as a graph-classification request (atom symbols or one-hot x)."""
    request: dict[str, Any] = {"edge_index": graph.edge_index.tolist()}
    if as_atoms:
        request["atoms"] = [MUTAG_ATOMS[i] for i in graph.x.argmax(-1).tolist()]
    else:
        request["x"] = graph.x.tolist()
    if graph.edge_attr is not None:
        request["edge_labels"] = [MUTAG_BONDS[i] for i in graph.edge_attr.argmax(-1).tolist()]
    return request


def cora_example(data_cfg: Any) -> tuple[str, str, bytes]:
    """`example` hook for cora_gcn/cora_gat: the 2-hop neighbourhood of the first test node."""
    cora = load_planetoid(data_cfg.name, data_cfg.root, data_cfg.mirror, normalize=False)[0]
    center = int(cora.test_mask.nonzero()[0])
    return ".json", "application/json", json.dumps(cora_request(cora, center)).encode()


def mutag_example(data_cfg: Any) -> tuple[str, str, bytes]:
    """`example` hook for mutag_gcn: the first MUTAG molecule, as atom symbols."""
    mutag = load_tu(data_cfg.name, data_cfg.root, data_cfg.mirror)
    return ".json", "application/json", json.dumps(mutag_request(mutag[0])).encode()


def write_examples(out: Path) -> dict[str, dict[str, str]]:
    """Writes one real request per served model to out/<name><suffix> and out/index.json.

    Each model_archives/<name>/archive.yaml names its `example` hook, which gets the data config
    and returns (suffix, content type, body bytes).
    """
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        for spec_path in sorted((ROOT / "model_archives").glob("*/archive.yaml")):
            name = spec_path.parent.name
            spec = yaml.safe_load(spec_path.read_text())
            data_cfg = compose("train", overrides=[f"experiment={spec['experiment']}"]).data
            suffix, content_type, body = get_method(spec["example"])(data_cfg)
            (out / f"{name}{suffix}").write_bytes(body)
            index[name] = {"file": f"{name}{suffix}", "content_type": content_type}
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "examples")
    args = parser.parse_args()
    for name, entry in write_examples(args.out).items():
        print(f"{name}: {args.out / entry['file']} ({entry['content_type']})")


if __name__ == "__main__":
    main()
