"""Validation of graph JSON (features, edge_index, node ids) into tensors, with precise errors."""

import math
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


def sparse_features(
    indices: Any, values: Any, feature_dim: int, max_nodes: int, field: str = "x_sparse"
) -> Tensor:
    """Parses per-node lists of non-zero feature indices (and optional values) into (N, F)."""
    if not isinstance(indices, list):
        raise RequestError(field, f"must be a list of index lists, got {type(indices).__name__}")
    n = len(indices)
    if n == 0:
        raise RequestError(field, "the graph is empty: at least one node is required")
    if n > max_nodes:
        raise RequestError(field, f"{n} nodes exceeds the limit of {max_nodes}", 413)
    if values is not None and (not isinstance(values, list) or len(values) != n):
        raise RequestError("x_values", f"must be a list with one value list per node ({n})")
    rows, cols, vals = [], [], []
    for i, idx in enumerate(indices):
        if not isinstance(idx, list):
            raise RequestError(field, f"{field}[{i}] must be a list of feature indices")
        for j, c in enumerate(idx):
            if isinstance(c, bool) or not isinstance(c, int):
                raise RequestError(field, f"{field}[{i}][{j}] = {c!r} is not an integer")
            if not 0 <= c < feature_dim:
                raise RequestError(
                    field, f"{field}[{i}][{j}] = {c} is out of range for {feature_dim} features"
                )
        rows.extend([i] * len(idx))
        cols.extend(idx)
        if values is not None:
            v = values[i]
            if not isinstance(v, list) or len(v) != len(idx):
                raise RequestError(
                    "x_values",
                    f"x_values[{i}] must have {len(idx)} numbers, one per index in {field}[{i}]",
                )
            for j, a in enumerate(v):
                if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
                    raise RequestError(
                        "x_values", f"x_values[{i}][{j}] = {a!r} is not a finite number"
                    )
            vals.extend(v)
    x = torch.zeros(n, feature_dim)
    if rows:
        src = torch.tensor(vals, dtype=torch.float32) if values is not None else 1.0
        x[torch.tensor(rows), torch.tensor(cols)] = src
    return x


def edge_index_tensor(
    value: Any, num_nodes: int, max_edges: int, field: str = "edge_index"
) -> Tensor:
    """Parses `[[src...], [dst...]]` into a long (2, E) tensor checked against num_nodes."""
    if value is None:
        raise RequestError(field, "is required: [[source ids], [target ids]]")
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(r, list) for r in value)
    ):
        raise RequestError(field, "must be two lists: [[source ids], [target ids]]")
    if len(value[0]) != len(value[1]):
        raise RequestError(
            field, f"ragged rows: {len(value[0])} sources but {len(value[1])} targets"
        )
    if len(value[0]) > max_edges:
        raise RequestError(field, f"{len(value[0])} edges exceeds the limit of {max_edges}", 413)
    if len(value[0]) == 0:
        return torch.empty(2, 0, dtype=torch.long)
    for r, row in enumerate(value):
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, int):
                raise RequestError(field, f"{field}[{r}][{j}] = {v!r} is not an integer")
    try:
        ei = torch.tensor(value, dtype=torch.long)
    except (
        RuntimeError,
        ValueError,
        OverflowError,
    ):  # an id beyond 64 bits: find it for the message
        r, j = next((r, j) for r in (0, 1) for j, v in enumerate(value[r]) if abs(v) >= 2**63)
        raise RequestError(
            field,
            f"{field}[{r}][{j}] = {str(value[r][j])[:24]} is out of range for {num_nodes} nodes",
        ) from None
    bad = ((ei < 0) | (ei >= num_nodes)).nonzero()
    if len(bad):
        r, j = int(bad[0][0]), int(bad[0][1])
        raise RequestError(
            field, f"{field}[{r}][{j}] = {int(ei[r, j])} is out of range for {num_nodes} nodes"
        )
    return ei


def node_ids(value: Any, num_nodes: int, field: str = "nodes") -> Optional[Tensor]:
    """Parses the optional list of node ids to return; None means every node."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise RequestError(field, "must be a non-empty list of node ids")
    for j, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int):
            raise RequestError(field, f"{field}[{j}] = {v!r} is not an integer")
        if not 0 <= v < num_nodes:
            raise RequestError(field, f"{field}[{j}] = {v} is out of range for {num_nodes} nodes")
    return torch.tensor(value, dtype=torch.long)


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
