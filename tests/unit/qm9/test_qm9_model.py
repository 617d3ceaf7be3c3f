"""NeighborPairs (plain torch) against torchmd-net's OptimizedDistance (warp kernel)."""

import subprocess
import sys

import pytest
import torch
from torchmdnet.models.utils import OptimizedDistance

from train.qm9.model import EnergyModel, NeighborPairs, build_et


def canonical(edge_index, weight, vec):
    """Pairs sorted by (i, j): the kernel writes them in a nondeterministic order."""
    order = (edge_index[0] * 100_000 + edge_index[1]).argsort()
    return edge_index[:, order], weight[order], vec[order]


def molecules(sizes, spread, seed):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(sum(sizes), 3, generator=g) * spread
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    return pos, batch


@pytest.mark.parametrize(
    ("sizes", "spread", "lower", "upper"),
    [([5], 1.0, 0.0, 5.0), ([3, 18, 29, 1], 2.0, 0.0, 4.0), ([12, 12], 3.0, 0.8, 3.0)],
)
def test_same_pairs_distances_and_vectors_as_torchmd_net(sizes, spread, lower, upper):
    pos, batch = molecules(sizes, spread, seed=len(sizes))
    ref = OptimizedDistance(
        lower, upper, max_num_pairs=-64, return_vecs=True, loop=True, long_edge_index=True
    )
    ei_ref, w_ref, v_ref = canonical(*ref(pos, batch))
    ei, w, v = canonical(*NeighborPairs(lower, upper)(pos, batch))
    assert torch.equal(ei, ei_ref)
    torch.testing.assert_close(w, w_ref)
    torch.testing.assert_close(v, v_ref)
    # The cutoff really cut something in the spread-out cases, and pairs never cross molecules.
    assert (batch[ei[0]] == batch[ei[1]]).all()


def test_gradients_match_and_self_pairs_give_no_nan():
    pos, batch = molecules([6, 9], 1.5, seed=3)
    grads = []
    for module in (
        OptimizedDistance(0.0, 5.0, max_num_pairs=-64, return_vecs=True, loop=True),
        NeighborPairs(0.0, 5.0),
    ):
        p = pos.clone().requires_grad_(True)
        _, w, v = module(p, batch)
        (w.pow(3).sum() + v.sin().sum()).backward()
        grads.append(p.grad)
    assert not torch.isnan(grads[1]).any()
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-4)


def test_scripted_energy_model_runs_without_torchmd_net(tmp_path):
    """The exported model needs torch alone: load and run it where torchmdnet cannot import."""
    net = build_et(embedding_dimension=16, num_layers=1, num_rbf=8, num_heads=2, cutoff_upper=4.0)
    assert isinstance(net.representation_model.distance, NeighborPairs)
    model = EnergyModel(net, torch.zeros(10, dtype=torch.float64)).eval()
    torch.jit.script(model).save(str(tmp_path / "model.pt"))
    z = torch.tensor([6, 1, 1, 1, 1])
    pos, batch = molecules([5], 0.7, seed=0)
    expected = model(z, pos, batch, False)[0]
    torch.save({"z": z, "pos": pos, "batch": batch}, tmp_path / "x.pt")
    code = (
        "import sys; sys.modules['torchmdnet'] = None; sys.modules['warp'] = None\n"
        "import torch\n"
        f"m = torch.jit.load({str(tmp_path / 'model.pt')!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        "e, f = m(x['z'], x['pos'], x['batch'], True)\n"
        "print(repr(float(e[0])), tuple(f.shape))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    energy, shape = out.stdout.strip().split(" ", 1)
    assert float(energy) == pytest.approx(float(expected), abs=1e-6)
    assert shape == "(5, 3)"
