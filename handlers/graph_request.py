"""Validation of graph JSON (features, edge_index, node ids) into tensors, with precise errors."""

from itertools import chain
from typing import Any, NamedTuple, Optional

import torch
from request_error import RequestError
from torch import Tensor

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _first_bad_row(rows: list, width: Optional[int], field: str) -> RequestError:
    """Finds why a nested list did not convert to a (N, width) tensor."""
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            return RequestError(field, f"{field}[{i}] must be a list, got {type(row).__name__}")
        if width is not None and len(row) != width:
            return RequestError(
                field, f"ragged rows: {field}[{i}] has {len(row)} values, expected {width}"
            )
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return RequestError(field, f"{field}[{i}][{j}] = {v!r} is not a number")
            if abs(v) > FLOAT32_MAX:
                return RequestError(field, f"{field}[{i}][{j}] = {str(v)[:24]} is beyond float32")
    return RequestError(field, "could not be read as a matrix of numbers")


def check_finite(t: Tensor, field: str) -> None:
    """Raises when any value is NaN or inf, naming the first one."""
    bad = (~torch.isfinite(t)).nonzero()
    if len(bad):
        pos = "".join(f"[{int(i)}]" for i in bad[0])
        raise RequestError(field, f"{field}{pos} = {t[tuple(bad[0])].item()} is not finite")


def dense_features(value: Any, feature_dim: int, max_nodes: int, field: str = "x") -> Tensor:
    """Parses a dense `x` (list of N rows of feature_dim numbers) into a float (N, F) tensor."""
    if not isinstance(value, list):
        raise RequestError(field, f"must be a list of rows, got {type(value).__name__}")
    if len(value) == 0:
        raise RequestError(field, "the graph is empty: at least one node is required")
    if len(value) > max_nodes:
        raise RequestError(field, f"{len(value)} nodes exceeds the limit of {max_nodes}", 413)
    try:
        x = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise _first_bad_row(value, feature_dim, field) from None
    if x.dim() != 2:
        raise _first_bad_row(value, feature_dim, field)
    if x.size(1) != feature_dim:
        raise RequestError(
            field, f"wrong feature dimension: rows have {x.size(1)} values, expected {feature_dim}"
        )
    check_finite(x, field)
    return x


def _long(value: list[int], field: str, where: Any, bound: str) -> Tensor:
    """A list of JSON integers as a long tensor; one beyond 64 bits is out of range, named."""
    try:
        return torch.tensor(value, dtype=torch.long)
    except (RuntimeError, ValueError, OverflowError):
        j = next(j for j, v in enumerate(value) if abs(v) >= 2**63)
        raise RequestError(
            field, f"{field}{where(j)} = {str(value[j])[:24]} is out of range for {bound}"
        ) from None


def _row_col(counts: Tensor, flat: int) -> tuple[int, int]:
    """Position `flat` of the concatenated rows as (row, column), rows of `counts` values."""
    ends = torch.cumsum(counts, 0)
    i = int(torch.searchsorted(ends, flat, right=True))
    return i, flat - int(ends[i] - counts[i])


def sparse_features(
    indices: list[list[int]],
    values: Optional[list[list[float]]],
    feature_dim: int,
    max_nodes: int,
    field: str = "x_sparse",
) -> Tensor:
    """Per-node lists of non-zero feature indices (and optional values) into (N, F).

    The types are the contract's (contract.NodeRequest); the ranges are checked here, on the
    concatenated tensors, without a Python loop over the values.
    """
    n = len(indices)
    if n == 0:
        raise RequestError(field, "the graph is empty: at least one node is required")
    if n > max_nodes:
        raise RequestError(field, f"{n} nodes exceeds the limit of {max_nodes}", 413)
    counts = torch.tensor([len(r) for r in indices], dtype=torch.long)
    flat = list(chain.from_iterable(indices))

    def at(j: int) -> str:
        return "[{}][{}]".format(*_row_col(counts, j))

    cols = _long(flat, field, at, f"{feature_dim} features")
    bad = ((cols < 0) | (cols >= feature_dim)).nonzero()
    if len(bad):
        j = int(bad[0])
        raise RequestError(
            field, f"{field}{at(j)} = {int(cols[j])} is out of range for {feature_dim} features"
        )
    src: Any = 1.0
    if values is not None:
        if len(values) != n:
            raise RequestError("x_values", f"must be a list with one value list per node ({n})")
        lengths = torch.tensor([len(v) for v in values], dtype=torch.long)
        if not torch.equal(lengths, counts):
            i = int((lengths != counts).nonzero()[0])
            raise RequestError(
                "x_values",
                f"x_values[{i}] must have {int(counts[i])} numbers, one per index in {field}[{i}]",
            )
        src = torch.tensor(list(chain.from_iterable(values)), dtype=torch.float32)
        nonfinite = (~torch.isfinite(src)).nonzero()
        if len(nonfinite):
            j = int(nonfinite[0])
            raise RequestError(
                "x_values", f"x_values{at(j)} = {float(src[j])} is not a finite number"
            )
    x = torch.zeros(n, feature_dim)
    if len(cols):
        x[torch.repeat_interleave(torch.arange(n), counts), cols] = src
    return x


def edge_index_tensor(
    value: list[list[int]], num_nodes: int, max_edges: int, field: str = "edge_index"
) -> Tensor:
    """`[[src...], [dst...]]` (two lists of ints: the contract's) into a long (2, E) tensor
    checked against num_nodes."""
    if len(value[0]) != len(value[1]):
        raise RequestError(
            field, f"ragged rows: {len(value[0])} sources but {len(value[1])} targets"
        )
    if len(value[0]) > max_edges:
        raise RequestError(field, f"{len(value[0])} edges exceeds the limit of {max_edges}", 413)
    if len(value[0]) == 0:
        return torch.empty(2, 0, dtype=torch.long)
    bound = f"{num_nodes} nodes"
    ei = torch.stack(
        [_long(row, field, lambda j, r=r: f"[{r}][{j}]", bound) for r, row in enumerate(value)]
    )
    bad = ((ei < 0) | (ei >= num_nodes)).nonzero()
    if len(bad):
        r, j = int(bad[0][0]), int(bad[0][1])
        raise RequestError(
            field, f"{field}[{r}][{j}] = {int(ei[r, j])} is out of range for {bound}"
        )
    return ei


def node_ids(value: Optional[list[int]], num_nodes: int, field: str = "nodes") -> Optional[Tensor]:
    """The optional node ids to return (a non-empty list of ints: the contract's); None means
    every node."""
    if value is None:
        return None
    ids = _long(value, field, lambda j: f"[{j}]", f"{num_nodes} nodes")
    bad = ((ids < 0) | (ids >= num_nodes)).nonzero()
    if len(bad):
        j = int(bad[0])
        raise RequestError(
            field, f"{field}[{j}] = {int(ids[j])} is out of range for {num_nodes} nodes"
        )
    return ids


def warmup_batches(feature_dim: int) -> list[list[dict[str, Any]]]:
    """A one-graph and a two-graph batch of requests, for a graph handler's warm-up."""
    graph: dict[str, Any] = {
        "x": [[1.0] + [0.0] * (feature_dim - 1)] * 3,
        "edge_index": [[0, 1, 2], [1, 2, 0]],
    }
    return [[graph], [graph, {**graph, "x": graph["x"][:2], "edge_index": [[0], [1]]}]]


class Graph(NamedTuple):
    """One request's graph: float (N, F) node features and long (2, E) edges."""

    x: Tensor
    edge_index: Tensor


def disjoint_union(graphs: list[Graph]) -> tuple[Tensor, Tensor, Tensor]:
    """Batches graphs exactly as PyG's `Batch.from_data_list` lays them out, in ~1/6 the time.

    Returns x (sum N, F), edge_index (2, sum E) with each graph's ids shifted by the nodes before
    it, and the node-to-graph vector batch (sum N,). tests/unit/test_handlers.py checks equality
    with `Batch.from_data_list`; the saving (about 0.5 ms a batch) matters at 1 ms model calls.
    """
    counts = torch.tensor([g.x.size(0) for g in graphs])
    offsets = (torch.cumsum(counts, 0) - counts).tolist()
    edge_index = torch.cat([g.edge_index + o for g, o in zip(graphs, offsets)], dim=1)
    batch = torch.repeat_interleave(torch.arange(len(graphs)), counts)
    return torch.cat([g.x for g in graphs]), edge_index, batch


def graph_stats(x: Tensor, edge_index: Tensor) -> dict[str, float]:
    """The drift monitor's input statistics of one graph: node count, mean degree, feature density.

    The handlers log them per request (payload_log) and training's export writes them for its
    own inputs into the reference profile (train/core/reference.py): one function for both.
    """
    n = max(int(x.size(0)), 1)
    return {
        "nodes": float(x.size(0)),
        "degree": float(edge_index.size(1)) / n,  # directed edges per node
        "feature_density": float((x != 0).sum()) / max(x.numel(), 1),
    }


def probabilities(probs: Tensor, labels: list[str]) -> dict[str, float]:
    """Maps a (C,) probability vector to {label: p}, rounded for a compact response."""
    return {name: round(float(p), 6) for name, p in zip(labels, probs.tolist())}


def normalize_features(x: Tensor, mode: str) -> Tensor:
    """Applies the training-time feature normalisation named in meta.json.

    `row_sum` is PyG's NormalizeFeatures: shift by the minimum, then divide each row by its sum.
    """
    if mode == "none":
        return x
    if mode == "row_sum":
        x = x - x.min()
        return x / x.sum(dim=-1, keepdim=True).clamp(min=1.0)
    raise ValueError(f"unknown normalisation {mode!r} in meta.json")
