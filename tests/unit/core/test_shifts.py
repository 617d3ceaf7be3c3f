"""The `shifts` hooks on the real held-out data: every served model has one, the requests are
the held-out split's, the same seed gives the same requests, a severity changes them, and the
transformations a model must ignore keep what the model sees."""

import json
import random

import pytest
import torch

from train.core.registry import experiment_config, served_models, spec
from train.core.shifts import load_hook, shift_hooks
from train.graph.shifts import add_edges, drop_edges, mask, sample_nodes
from train.qm9.shifts import merge, rotate, translate

pytestmark = pytest.mark.usefixtures("data_root")


def test_every_served_model_names_a_shifts_hook():
    assert sorted(shift_hooks()) == sorted(served_models())


def hook_of(name: str, size: int, seed: str = "0"):
    data_cfg = experiment_config(spec(name).experiment).data
    return load_hook(spec(name).shifts)(data_cfg, size, random.Random(seed))


@pytest.mark.parametrize("name", ["cora_gcn", "mutag_gcn", "qm9_et", "imdb_bert", "flowers_cnn"])
def test_a_hook_is_deterministic_and_every_severity_shifts(name):
    a, b = hook_of(name, 6), hook_of(name, 6)
    assert [c.body for c in a.clean] == [c.body for c in b.clean]
    assert len(a.clean) == 6 and all(c.target is not None for c in a.clean)
    assert a.shifts and all(len(s.severities) == 3 for s in a.shifts.values())
    for shift_name, shift in a.shifts.items():
        strongest = shift.make(shift.severities[-1])
        again = b.shifts[shift_name].make(shift.severities[-1])
        assert [c.body for c in strongest] == [c.body for c in again], shift_name
        assert [c.body for c in strongest] != [c.body for c in a.clean], shift_name


def test_node_requests_are_test_nodes_with_their_labels():
    ss = hook_of("cora_gcn", 20)
    req = json.loads(ss.clean[0].body)
    assert req["nodes"] == [req["nodes"][0]] and len(req["x_sparse"]) >= 1
    assert all(0 <= c.target < 7 for c in ss.clean)


def g():
    x = torch.eye(6)
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4, 4, 5], [1, 0, 2, 1, 3, 2, 4, 3, 5, 4]])
    return x, edge_index, 2


def test_graph_shifts_keep_the_node_asked_for_and_valid_edges():
    gen = torch.Generator().manual_seed(0)
    x, ei, c = sample_nodes(g(), 0.6, gen)
    assert c >= 0 and x[c].argmax() == 2  # node 2 is still the one asked for
    assert int(ei.max()) < x.size(0) if ei.numel() else True
    _, more, _ = add_edges(g(), 1.0, gen)
    assert more.dtype == torch.long and more.size(1) > 10 and int(more.max()) < 6
    assert torch.equal(
        torch.sort(more[0] * 6 + more[1]).values.unique(), torch.sort(more[0] * 6 + more[1]).values
    )
    _, fewer, _ = drop_edges(g(), 0.5, gen)
    assert fewer.size(1) < 10
    masked, _, _ = mask(g(), 1.0, gen)
    assert float(masked.sum()) == 0.0


def test_rotation_and_translation_keep_every_interatomic_distance():
    from torch_geometric.data import Data

    m = Data(
        z=torch.tensor([6, 1, 1, 8]),
        pos=torch.randn(4, 3, dtype=torch.float64),
        y=torch.tensor([-1.0]),
    )
    gen = torch.Generator().manual_seed(0)
    for moved in (rotate(m, 180.0, gen), translate(m, 100.0, gen)):
        torch.testing.assert_close(torch.cdist(moved.pos, moved.pos), torch.cdist(m.pos, m.pos))
    two = merge(m, m)
    assert two.z.numel() == 8 and float(two.y) == -2.0
    assert float(torch.cdist(two.pos[:4], two.pos[4:]).min()) >= 10.0 - 1e-9
