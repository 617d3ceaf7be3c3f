"""TorchServe handler for node classification (cora_gcn, cora_gat).

Request (application/json), features dense or sparse:
    {"x": [[0, 1, ...], ...]}                      N rows of feature_dim numbers, or
    {"x_sparse": [[12, 507], [3], ...],           non-zero feature indices per node
     "x_values": [[1.0, 1.0], [1.0], ...]}         optional values (default 1.0)
    plus "edge_index": [[src, ...], [dst, ...]]    and optional "nodes": [ids to return]
Response:
    {"predictions": [{"node": 0, "label": "Neural_Networks",
                      "probabilities": {"Theory": 0.01, ...}}, ...]}
"""

from typing import Any

import torch
from model_metrics import EDGES, NODES, Observed
from torch import Tensor

from contract import NodeRequest, validate
from graph_request import (
    Graph,
    dense_features,
    disjoint_union,
    edge_index_tensor,
    graph_stats,
    node_ids,
    normalize_features,
    probabilities,
    sparse_features,
    warmup_batches,
)
from json_batch_handler import JsonBatchHandler, RequestError, to_device


class NodeClassifierHandler(JsonBatchHandler):
    """Classifies the nodes of each request's graph; a batch runs as one disjoint-union graph."""

    defaults = {**JsonBatchHandler.defaults, "max_nodes": 20000, "max_edges": 200000}

    def initialize(self, context: Any) -> None:
        """Loads model and meta, then warms up on a one-graph and a two-graph batch."""
        super().initialize(context)
        for batch in warmup_batches(self.meta["feature_dim"]):
            self.warm_up_on(batch)

    def parse(self, payload: dict[str, Any]) -> tuple[Graph, Any]:
        """Builds the graph (normalised x, edge_index) and the node ids to return."""
        req = validate(payload, NodeRequest)
        dim, max_nodes = self.meta["feature_dim"], self.config["max_nodes"]
        if req.x is not None and req.x_sparse is not None:
            raise RequestError("x", "send either dense `x` or sparse `x_sparse`, not both")
        if req.x is not None:
            x = dense_features(req.x, dim, max_nodes)
        elif req.x_sparse is not None:
            x = sparse_features(req.x_sparse, req.x_values, dim, max_nodes)
        else:
            raise RequestError("x", "missing: send dense `x` or sparse `x_sparse` node features")
        edge_index = edge_index_tensor(req.edge_index, x.size(0), self.config["max_edges"])
        nodes = node_ids(req.nodes, x.size(0))
        x = normalize_features(x, self.meta["normalize"])
        return Graph(x, edge_index), nodes

    def collate(self, items: list[tuple[Graph, Any]]) -> tuple[Tensor, Tensor]:
        """All request graphs as one disjoint union: (sum N, F) features and (2, sum E) edges."""
        x, edge_index, _ = disjoint_union([graph for graph, _ in items])
        return x, edge_index

    def respond(self, logits: Tensor, items: list[tuple[Graph, Any]]) -> list[dict[str, Any]]:
        """Softmax per node, split back per request by node counts."""
        probs = torch.softmax(logits, dim=-1)  # (sum N, C)
        labels = self.meta["labels"]
        results, start = [], 0
        for graph, nodes in items:
            num_nodes = graph.x.size(0)
            p = probs[start : start + num_nodes]
            start += num_nodes
            ids = nodes.tolist() if nodes is not None else list(range(num_nodes))
            results.append(
                {
                    "predictions": [
                        {
                            "node": n,
                            "label": labels[int(p[n].argmax())],
                            "probabilities": probabilities(p[n], labels),
                        }
                        for n in ids
                    ]
                }
            )
        return results

    def observe(self, items: list[tuple[Graph, Any]], outputs: list[dict]) -> Observed:
        """Nodes and edges of each graph; the label and its probability of each returned node."""
        answers = [p for out in outputs for p in out["predictions"]]
        return Observed(
            sizes={
                NODES: sum(int(g.x.size(0)) for g, _ in items),
                EDGES: sum(int(g.edge_index.size(1)) for g, _ in items),
            },
            labels=[p["label"] for p in answers],
            top1=[p["probabilities"][p["label"]] for p in answers],
        )

    def drift_stats(self, item: tuple[Graph, Any]) -> dict[str, float]:
        """Payload log: the request graph's statistics (graph_request.graph_stats)."""
        return graph_stats(item[0].x, item[0].edge_index)

    def drift_prediction(self, item: tuple[Graph, Any], result: dict[str, Any]) -> list[int]:
        """Payload log: the label index of each returned node."""
        index = {name: i for i, name in enumerate(self.meta["labels"])}
        return [index[p["label"]] for p in result["predictions"]]

    def drift_embeddings(self, items: list[tuple[Graph, Any]]) -> Tensor:
        """(B, H): each request's embedding, averaged over the nodes it asked for."""
        x, edge_index = to_device(self.collate(items), getattr(self, "device", None) or "cpu")
        emb = self.model.embed(x, edge_index).cpu()  # (sum N, H)
        rows, start = [], 0
        for graph, nodes in items:
            own = emb[start : start + graph.x.size(0)]
            start += graph.x.size(0)
            rows.append((own[nodes] if nodes is not None else own).mean(0))
        return torch.stack(rows)
