"""Real example requests built from the data directory (never committed; `make examples`).

Usage: python -m train.examples [--out examples] [--root data]
"""

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch_geometric.utils import k_hop_subgraph

from train.data import load_planetoid, load_tu

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


def write_examples(out: Path, root: str, mirror: str | None) -> list[Path]:
    """Writes one real request per graph model to out/<model>.json."""
    out.mkdir(parents=True, exist_ok=True)
    cora = load_planetoid("Cora", root, mirror, normalize=False)[0]
    center = int(cora.test_mask.nonzero()[0])
    mutag = load_tu("MUTAG", root, mirror)
    written = []
    for name, request in [
        ("cora_gcn", cora_request(cora, center)),
        ("cora_gat", cora_request(cora, center)),
        ("mutag_gcn", mutag_request(mutag[0])),
    ]:
        path = out / f"{name}.json"
        path.write_text(json.dumps(request) + "\n")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples"))
    parser.add_argument("--root", default=os.environ.get("DATA_DIR", "data"))
    args = parser.parse_args()
    torch.manual_seed(0)
    for path in write_examples(args.out, args.root, os.environ.get("DATA_MIRROR")):
        print(path)


if __name__ == "__main__":
    main()
