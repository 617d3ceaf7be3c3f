"""Cora and MUTAG requests from the real data: the `example` and `pool` hooks of the graph models.

`planetoid_request` and `mutag_request` build the JSON the node and graph handlers take; the e2e
tests send the same requests.
"""

import json
import random
from typing import Any

from torch_geometric.utils import k_hop_subgraph

from train.core.pools import Payload, json_payload
from train.graph.data import load_planetoid, load_tu

MUTAG_ATOMS = ["C", "N", "O", "F", "I", "Cl", "Br"]
MUTAG_BONDS = ["aromatic", "single", "double", "triple"]


def planetoid_request(data: Any, center: int, hops: int = 2, sparse: bool = True) -> dict[str, Any]:
    """The k-hop neighbourhood of one Planetoid node (Cora, ...) as a node-classification request.

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


def planetoid_example(data_cfg: Any) -> tuple[str, str, bytes]:
    """`example` hook of the node classifiers: the 2-hop neighbourhood of the first test node."""
    graph = load_planetoid(data_cfg.name, data_cfg.root, data_cfg.mirror, normalize=False)[0]
    center = int(graph.test_mask.nonzero()[0])
    return ".json", "application/json", json.dumps(planetoid_request(graph, center)).encode()


def mutag_example(data_cfg: Any) -> tuple[str, str, bytes]:
    """`example` hook for mutag_gcn: the first MUTAG molecule, as atom symbols."""
    mutag = load_tu(data_cfg.name, data_cfg.root, data_cfg.mirror)
    return ".json", "application/json", json.dumps(mutag_request(mutag[0])).encode()


def planetoid_pool(data_cfg: Any, size: int, rng: random.Random) -> list[Payload]:
    """Neighbourhoods of random nodes: 1 hop (a few nodes) to 2 hops (up to ~800 on Cora).

    Most use the sparse feature form; small 1-hop ones sometimes send dense rows, and some ask
    for every node of the subgraph instead of only the centre.
    """
    graph = load_planetoid(data_cfg.name, data_cfg.root, data_cfg.mirror, normalize=False)[0]
    pool = []
    for _ in range(size):
        center = rng.randrange(graph.num_nodes)
        hops = 1 if rng.random() < 0.4 else 2
        request = planetoid_request(graph, center, hops=hops, sparse=True)
        if hops == 1 and len(request["x_sparse"]) <= 8 and rng.random() < 0.3:
            request = planetoid_request(graph, center, hops=1, sparse=False)
        if rng.random() < 0.2:
            del request["nodes"]  # all nodes of the subgraph
        pool.append(json_payload(request))
    return pool


def mutag_pool(data_cfg: Any, size: int, rng: random.Random) -> list[Payload]:
    """MUTAG molecules (all 188 when size allows), mostly as atom symbols, some as one-hot rows."""
    mutag = load_tu(data_cfg.name, data_cfg.root, data_cfg.mirror)
    order = list(range(len(mutag)))
    rng.shuffle(order)
    picks = [order[i % len(order)] for i in range(size)]
    return [json_payload(mutag_request(mutag[i], as_atoms=rng.random() < 0.8)) for i in picks]
