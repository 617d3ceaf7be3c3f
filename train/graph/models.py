"""Graph models. Every forward is type-hinted so the model scripts with torch.jit.script."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, global_add_pool, global_mean_pool
from torch_geometric.utils import (
    add_self_loops,
    remove_self_loops,
    scatter,
)


class ScriptableGATConv(GATConv):
    """GATConv whose forward takes only (x, edge_index) so that torch.jit.script accepts it.

    PyG 2.8.1's GATConv.forward has `return_attention_weights: Optional[bool]` and a Union
    return type chosen by that flag's value; TorchScript cannot type a function whose return
    type depends on an argument, so scripting fails. Serving never needs attention weights,
    so this subclass keeps the parent's parameters, `edge_updater` and `propagate` (the
    same math, same state_dict) and drops only that argument and the bipartite/SparseTensor
    branches. `tests/unit/test_models.py` checks it against the stock GATConv.
    """

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:  # type: ignore[override]
        """Runs attention message passing over a homogeneous graph."""
        H, C = self.heads, self.out_channels
        assert self.lin is not None
        x_src = self.lin(x).view(-1, H, C)  # (N, F) -> (N, H, C)
        alpha_src = (x_src * self.att_src).sum(dim=-1)
        alpha_dst = (x_src * self.att_dst).sum(dim=-1)
        if self.add_self_loops:
            edge_index, _ = remove_self_loops(edge_index)
            edge_index, _ = add_self_loops(edge_index, num_nodes=x_src.size(0))
        # edge_updater_type: (alpha: OptPairTensor, edge_attr: OptTensor)
        alpha = self.edge_updater(edge_index, alpha=(alpha_src, alpha_dst), edge_attr=None)
        # propagate_type: (x: OptPairTensor, alpha: Tensor)
        out = self.propagate(edge_index, x=(x_src, x_src), alpha=alpha)
        if self.concat:
            out = out.view(-1, H * C)  # (N, H, C) -> (N, H*C)
        else:
            out = out.mean(dim=1)
        if self.bias is not None:
            out = out + self.bias
        return out


class ScriptableGCNConv(GCNConv):
    """GCNConv whose forward takes only Tensor edge_index, so the scripted file also *loads*.

    PyG 2.8.1's GCNConv scripts, but `torch.jit.load` of the saved file fails (pyg-team/
    pytorch_geometric#8867): gcn_norm branches on `Union[Tensor, SparseTensor]` and the
    serialized code no longer type-checks without torch_sparse. This subclass computes the same
    symmetric normalisation, D^-1/2 (A + I) D^-1/2 as `gcn_norm` does, on plain
    tensors, then reuses the parent's `lin`, `propagate` and `bias` (same state_dict).
    Serving never caches the normalisation, since every request brings its own graph.
    `tests/unit/test_models.py` checks it against the stock GCNConv.
    """

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:  # type: ignore[override]
        """Runs normalised graph convolution over a homogeneous graph."""
        num_nodes = x.size(0)
        weight = torch.ones(edge_index.size(1), dtype=x.dtype, device=x.device)
        if self.add_self_loops:
            # add_remaining_self_loops, inlined: its scripted form fails to save (undefined tensor).
            # Existing self-loops keep their weight; every other node gets one of weight `fill`.
            fill = 2.0 if self.improved else 1.0
            is_loop = edge_index[0] == edge_index[1]
            loop_weight = torch.full((num_nodes,), fill, dtype=x.dtype, device=x.device)
            loop_weight[edge_index[0][is_loop]] = weight[is_loop]
            loops = torch.arange(num_nodes, device=x.device)
            edge_index = torch.cat([edge_index[:, ~is_loop], torch.stack([loops, loops])], dim=1)
            weight = torch.cat([weight[~is_loop], loop_weight])
        row, col = edge_index[0], edge_index[1]
        deg = scatter(weight, col, 0, dim_size=num_nodes, reduce="sum")  # (E,) -> (N,)
        deg_inv_sqrt = deg.pow(-0.5)
        deg_inv_sqrt = deg_inv_sqrt.masked_fill(deg_inv_sqrt == float("inf"), 0.0)
        weight = deg_inv_sqrt[row] * weight * deg_inv_sqrt[col]
        x = self.lin(x)
        # propagate_type: (x: Tensor, edge_weight: OptTensor)
        out = self.propagate(edge_index, x=x, edge_weight=weight)
        if self.bias is not None:
            out = out + self.bias
        return out


class GCN(nn.Module):
    """Two-layer GCN for node classification (Kipf & Welling, 2017)."""

    def __init__(self, in_dim: int, hidden_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = ScriptableGCNConv(in_dim, hidden_dim)
        self.conv2 = ScriptableGCNConv(hidden_dim, num_classes)
        self.dropout = dropout

    @torch.jit.export
    def embed(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """(N, hidden_dim): the first layer's output, the drift monitor's penultimate embedding."""
        x = F.dropout(x, p=self.dropout, training=self.training)
        return F.relu(self.conv1(x, edge_index))

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Returns logits of shape (N, num_classes)."""
        x = F.dropout(self.embed(x, edge_index), p=self.dropout, training=self.training)
        return self.conv2(x, edge_index)


class GAT(nn.Module):
    """Two-layer GAT for node classification (Veličković et al., 2018)."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        num_classes: int,
        heads: int,
        out_heads: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.conv1 = ScriptableGATConv(in_dim, hidden_dim, heads=heads, dropout=dropout)
        self.conv2 = ScriptableGATConv(
            hidden_dim * heads,
            num_classes,
            heads=out_heads,
            concat=False,
            dropout=dropout,
        )
        self.dropout = dropout

    @torch.jit.export
    def embed(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """(N, hidden_dim * heads): the first layer's output, the drift monitor's embedding."""
        x = F.dropout(x, p=self.dropout, training=self.training)
        return F.elu(self.conv1(x, edge_index))

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Returns logits of shape (N, num_classes)."""
        x = F.dropout(self.embed(x, edge_index), p=self.dropout, training=self.training)
        return self.conv2(x, edge_index)


class GraphGCN(nn.Module):
    """GCN encoder, sum+mean readout and an MLP head for graph classification."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        num_layers: int,
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * num_layers
        self.convs = nn.ModuleList(
            [ScriptableGCNConv(dims[i], dims[i + 1]) for i in range(num_layers)]
        )
        self.head = nn.Sequential(
            nn.Linear(2 * hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    @torch.jit.export
    def embed(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        """(B, 2 * hidden_dim): the pooled readout the head reads, the drift monitor's embedding."""
        for conv in self.convs:
            x = F.relu(conv(x, edge_index))
        size: Optional[int] = None
        # (N, H) -> (B, 2H): sum keeps graph size, mean keeps composition.
        return torch.cat(
            [global_add_pool(x, batch, size), global_mean_pool(x, batch, size)], dim=-1
        )

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        """Returns logits of shape (B, num_classes) for B graphs given by `batch`."""
        return self.head(self.embed(x, edge_index, batch))
