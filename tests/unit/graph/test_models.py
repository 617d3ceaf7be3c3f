"""Model shapes, TorchScript round trips, and the scriptable convs against PyG's stock ones."""

import io

import pytest
import torch
from torch_geometric.nn import GATConv, GCNConv

from train.graph.models import GAT, GCN, GraphGCN, ScriptableGATConv, ScriptableGCNConv

# A tiny graph with a self-loop on node 2, so the self-loop handling is exercised.
EDGE_INDEX = torch.tensor([[0, 0, 1, 2, 2, 3], [1, 2, 0, 0, 2, 1]])


def _roundtrip(module: torch.nn.Module) -> torch.jit.ScriptModule:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    buf.seek(0)
    return torch.jit.load(buf)


@pytest.mark.parametrize(
    "net, args, shape",
    [
        (GCN(6, 8, 3, 0.5), (torch.randn(4, 6), EDGE_INDEX), (4, 3)),
        (GAT(6, 4, 3, heads=2, out_heads=1, dropout=0.6), (torch.randn(4, 6), EDGE_INDEX), (4, 3)),
        (
            GraphGCN(6, 8, num_layers=2, num_classes=2, dropout=0.1),
            (torch.randn(4, 6), EDGE_INDEX, torch.tensor([0, 0, 1, 1])),
            (2, 2),
        ),
    ],
    ids=["gcn", "gat", "graph_gcn"],
)
def test_shapes_and_scripted_file_matches_eager(net, args, shape):
    net.eval()
    out = net(*args)
    assert out.shape == shape
    torch.testing.assert_close(_roundtrip(net)(*args), out)


def test_scriptable_gcn_conv_equals_stock_gcn_conv():
    torch.manual_seed(0)
    ours = ScriptableGCNConv(6, 5).eval()
    stock = GCNConv(6, 5).eval()
    stock.load_state_dict(ours.state_dict())
    x = torch.randn(4, 6)
    torch.testing.assert_close(ours(x, EDGE_INDEX), stock(x, EDGE_INDEX))


def test_scriptable_gat_conv_equals_stock_gat_conv():
    torch.manual_seed(0)
    ours = ScriptableGATConv(6, 5, heads=3).eval()
    stock = GATConv(6, 5, heads=3).eval()
    stock.load_state_dict(ours.state_dict())
    x = torch.randn(4, 6)
    torch.testing.assert_close(ours(x, EDGE_INDEX), stock(x, EDGE_INDEX))


def test_stock_gat_conv_does_not_script():
    """Why ScriptableGATConv exists: if PyG fixes this, the subclass can go."""
    with pytest.raises(RuntimeError):
        torch.jit.script(GATConv(6, 5))


def test_graph_without_edges_still_predicts():
    net = GraphGCN(6, 8, num_layers=2, num_classes=2, dropout=0.1).eval()
    out = _roundtrip(net)(
        torch.randn(1, 6), torch.empty(2, 0, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    )
    assert out.shape == (1, 2) and torch.isfinite(out).all()
