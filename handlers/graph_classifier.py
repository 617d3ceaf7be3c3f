"""TorchServe handler for graph classification (mutag_gcn).

Request (application/json), nodes as one-hot features or atom symbols:
    {"x": [[1, 0, 0, 0, 0, 0, 0], ...]}            one-hot rows over the atom table, or
    {"atoms": ["C", "C", "N", ...]}                symbols from meta.json's atom_labels
    plus "edge_index": [[src, ...], [dst, ...]]    each bond listed in both directions, and
    optional "edge_labels": ["aromatic", ...] or [0, ...], one per edge (validated; the
    served GCN does not use them, see meta.json's uses_edge_labels)
Response:
    {"label": "mutagenic", "probabilities": {"non-mutagenic": 0.1, "mutagenic": 0.9}}
"""

from typing import Any

import torch
import torch.nn.functional as F
from model_metrics import EDGES, NODES, Observed
from torch import Tensor

from contract import GraphRequest, validate
from graph_request import (
    Graph,
    dense_features,
    disjoint_union,
    edge_index_tensor,
    graph_stats,
    probabilities,
    warmup_batches,
)
from json_batch_handler import JsonBatchHandler, RequestError


class GraphClassifierHandler(JsonBatchHandler):
    """Classifies one molecule per request; a batch runs as one disjoint-union graph."""

    defaults = {**JsonBatchHandler.defaults, "max_nodes": 500, "max_edges": 2000}

    def initialize(self, context: Any) -> None:
        """Loads model and meta, then warms up on a one-graph and a two-graph batch."""
        super().initialize(context)
        for batch in warmup_batches(self.meta["feature_dim"]):
            self.warm_up_on(batch)

    def parse(self, payload: dict[str, Any]) -> Graph:
        """Builds the molecule graph: one-hot x and edge_index, from `x` or `atoms`."""
        req = validate(payload, GraphRequest)
        atom_table = self.meta["atom_labels"]
        max_nodes = self.config["max_nodes"]
        if req.x is not None and req.atoms is not None:
            raise RequestError("x", "send either one-hot `x` or `atoms`, not both")
        if req.x is not None:
            x = dense_features(req.x, len(atom_table), max_nodes)
            if not bool(((x == 0) | (x == 1)).all() and (x.sum(-1) == 1).all()):
                row = int(((x.sum(-1) != 1) | ((x != 0) & (x != 1)).any(-1)).nonzero()[0])
                raise RequestError("x", f"x[{row}] is not one-hot over {len(atom_table)} atoms")
        elif req.atoms is not None:
            x = self._one_hot_atoms(req.atoms, atom_table, max_nodes)
        else:
            raise RequestError("x", "missing: send one-hot `x` or `atoms` symbols")
        edge_index = edge_index_tensor(req.edge_index, x.size(0), self.config["max_edges"])
        if req.edge_labels is not None:
            self._check_edge_labels(req.edge_labels, edge_index.size(1))
        return Graph(x, edge_index)

    @staticmethod
    def _one_hot_atoms(atoms: Any, table: list[str], max_nodes: int) -> torch.Tensor:
        if not isinstance(atoms, list):
            raise RequestError("atoms", "must be a list of atom symbols")
        if not atoms:
            raise RequestError("atoms", "the graph is empty: at least one atom is required")
        if len(atoms) > max_nodes:
            raise RequestError("atoms", f"{len(atoms)} nodes exceeds the limit of {max_nodes}", 413)
        index = {s: i for i, s in enumerate(table)}
        ids = []
        for j, a in enumerate(atoms):
            if not isinstance(a, str) or a not in index:
                raise RequestError(
                    "atoms", f"atoms[{j}] = {a!r} is not a MUTAG atom; known: {', '.join(table)}"
                )
            ids.append(index[a])
        return F.one_hot(torch.tensor(ids), len(table)).float()

    def _check_edge_labels(self, labels: Any, num_edges: int) -> None:
        table = self.meta["edge_labels"]
        if not isinstance(labels, list) or len(labels) != num_edges:
            raise RequestError(
                "edge_labels", f"must be a list with one label per edge ({num_edges})"
            )
        for j, lab in enumerate(labels):
            ok = (
                lab in table
                if isinstance(lab, str)
                else (isinstance(lab, int) and not isinstance(lab, bool) and 0 <= lab < len(table))
            )
            if not ok:
                raise RequestError(
                    "edge_labels",
                    f"edge_labels[{j}] = {lab!r} is not one of {table} or 0..{len(table) - 1}",
                )

    def collate(self, items: list[Graph]) -> tuple[Tensor, Tensor, Tensor]:
        """All molecules as one disjoint union: x, edge_index and the node-to-graph vector."""
        return disjoint_union(items)

    def respond(self, logits: Tensor, items: list[Graph]) -> list[dict[str, Any]]:
        """Softmax over classes, one result per molecule."""
        probs = torch.softmax(logits, dim=-1)  # (B, C)
        labels = self.meta["labels"]
        return [
            {"label": labels[int(p.argmax())], "probabilities": probabilities(p, labels)}
            for p in probs
        ]

    def observe(self, items: list[Graph], outputs: list[dict]) -> Observed:
        """Nodes and edges of each molecule; its label and the label's probability."""
        return Observed(
            sizes={
                NODES: sum(int(g.x.size(0)) for g in items),
                EDGES: sum(int(g.edge_index.size(1)) for g in items),
            },
            labels=[out["label"] for out in outputs],
            top1=[out["probabilities"][out["label"]] for out in outputs],
        )

    def drift_stats(self, item: Graph) -> dict[str, float]:
        """Payload log: the molecule graph's statistics (graph_request.graph_stats)."""
        return graph_stats(item.x, item.edge_index)

    def drift_prediction(self, item: Graph, result: dict[str, Any]) -> int:
        """Payload log: the predicted label's index."""
        return self.meta["labels"].index(result["label"])
