"""Cora, CiteSeer and MUTAG held out and shifted: the `shifts` hooks of the graph models.

Every shift is one of PyG's own augmentation utilities, applied to each request's graph: feature
masking (`mask_feature`), edge dropping (`dropout_edge`), edge adding (`add_random_edge`) and
subgraph sampling (`subgraph` on a random share of the nodes). Severities are the probability or
share each takes. Node requests are the 2-hop neighbourhood of a test node, the request the
example sends and the drift reference assumes (train/graph/node.py).
"""

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch_geometric.utils import (
    add_random_edge,
    coalesce,
    dropout_edge,
    k_hop_subgraph,
    mask_feature,
    subgraph,
    to_undirected,
)

from train.core.shifts import Case, Shift, ShiftSet, json_case
from train.graph.data import load_planetoid, load_tu
from train.graph.graph import stratified_folds

Graph = tuple[Tensor, Tensor, int]  # x (N, F), edge_index (2, E), the node asked for (-1: none)


@contextmanager
def seeded(gen: torch.Generator) -> Iterator[None]:
    """PyG's utilities draw from torch's global generator, and negative sampling from Python's
    `random`: both seeded from `gen` here, and restored after."""
    seed = int(torch.randint(2**31, (1,), generator=gen))
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


def mask(g: Graph, p: float, gen: torch.Generator) -> Graph:
    """Each feature entry zeroed with probability p (a word of a paper, an atom type)."""
    with seeded(gen):
        x, _ = mask_feature(g[0], p=p, mode="all")
    return x, g[1], g[2]


def drop_edges(g: Graph, p: float, gen: torch.Generator) -> Graph:
    with seeded(gen):
        edge_index, _ = dropout_edge(g[1], p=p, force_undirected=True)
    return g[0], edge_index, g[2]


def add_edges(g: Graph, p: float, gen: torch.Generator) -> Graph:
    """Random undirected edges, p times as many as the graph has."""
    if g[1].size(1) == 0:
        return g
    n = int(g[0].size(0))
    with seeded(gen):
        # Directed, then both directions: PyG 2.x's force_undirected path fails on small graphs
        # (negative_sampling's float offset). g[1] holds both directions, so p/2 added pairs
        # make p times its edges.
        _, added = add_random_edge(g[1], p=p / 2, num_nodes=n)
    both = coalesce(torch.cat([g[1], to_undirected(added.long(), num_nodes=n)], dim=1), num_nodes=n)
    return g[0], both, g[2]  # coalesce: a pair drawn in both directions once


def sample_nodes(g: Graph, p: float, gen: torch.Generator) -> Graph:
    """The subgraph on a random (1 - p) share of the nodes; a node asked for always stays."""
    n = int(g[0].size(0))
    keep = torch.rand(n, generator=gen) >= p
    if g[2] >= 0:
        keep[g[2]] = True
    if not bool(keep.any()):
        keep[0] = True
    edge_index, _ = subgraph(keep, g[1], relabel_nodes=True, num_nodes=n)
    center = int(keep[: g[2]].sum()) if g[2] >= 0 else -1
    return g[0][keep], edge_index, center


SHIFTS = {
    "feature_mask": (mask, [0.1, 0.3, 0.5]),
    "edge_drop": (drop_edges, [0.1, 0.3, 0.5]),
    "edge_add": (add_edges, [0.2, 0.5, 1.0]),
    "subgraph": (sample_nodes, [0.2, 0.4, 0.6]),
}


def relabel_atoms(g: Graph, p: float, gen: torch.Generator) -> Graph:
    """Each atom's type replaced by a random one with probability p. A molecule's node is one
    one-hot atom type, and the handler rightly refuses a zeroed row, so this is its masking."""
    x = g[0].clone()
    hit = torch.rand(x.size(0), generator=gen) < p
    new = torch.randint(x.size(1), (x.size(0),), generator=gen)
    x[hit] = torch.nn.functional.one_hot(new[hit], x.size(1)).to(x.dtype)
    return x, g[1], g[2]


def node_request(g: Graph) -> dict[str, Any]:
    """A node-classification request for the graph's centre node (sparse feature rows)."""
    x, edge_index, center = g
    return {
        "edge_index": edge_index.tolist(),
        "x_sparse": [row.nonzero().view(-1).tolist() for row in x],
        "nodes": [center],
    }


def graph_request(g: Graph) -> dict[str, Any]:
    """A graph-classification request with one-hot rows (masking can zero a row)."""
    return {"edge_index": g[1].tolist(), "x": g[0].tolist()}


def shift_set(
    graphs: list[Graph], targets: list[int], to_request: Any, seed: int, shifts: Any = None
) -> ShiftSet:
    def make(fn: Any) -> Any:
        def at(severity: float) -> list[Case]:
            gen = torch.Generator().manual_seed(seed)
            return [json_case(to_request(fn(g, severity, gen)), t) for g, t in zip(graphs, targets)]

        return at

    return ShiftSet(
        clean=[json_case(to_request(g), t) for g, t in zip(graphs, targets)],
        shifts={
            name: Shift(severities, make(fn), unit="p")
            for name, (fn, severities) in (shifts or SHIFTS).items()
        },
    )


def planetoid_shifts(data_cfg: Any, size: int, rng: random.Random) -> ShiftSet:
    """`size` test nodes (raw features: the handler normalises), each as its 2-hop request."""
    data = load_planetoid(data_cfg.name, data_cfg.root, data_cfg.mirror, normalize=False)[0]
    test = data.test_mask.nonzero().view(-1).tolist()
    nodes = sorted(rng.sample(test, min(size, len(test))))
    graphs = []
    for c in nodes:
        subset, edge_index, mapping, _ = k_hop_subgraph(
            c, 2, data.edge_index, relabel_nodes=True, num_nodes=data.num_nodes
        )
        graphs.append((data.x[subset], edge_index, int(mapping[0])))
    targets = [int(data.y[c]) for c in nodes]
    return shift_set(graphs, targets, node_request, rng.randrange(2**31))


def mutag_shifts(data_cfg: Any, size: int, rng: random.Random) -> ShiftSet:
    """The molecules training never fitted: the final model's test and validation folds."""
    mutag = load_tu(data_cfg.name, data_cfg.root, data_cfg.mirror)
    folds = stratified_folds(mutag.y, data_cfg.folds, 42)  # configs/train.yaml's seed
    held = sorted(torch.cat(folds[:2]).tolist())
    picks = sorted(rng.sample(held, min(size, len(held))))
    graphs = [(mutag[i].x, mutag[i].edge_index, -1) for i in picks]
    targets = [int(mutag[i].y) for i in picks]
    shifts = {**SHIFTS, "feature_mask": (relabel_atoms, [0.1, 0.3, 0.5])}
    return shift_set(graphs, targets, graph_request, rng.randrange(2**31), shifts)
