"""qm9_et handler in-process: request forms, forces, batching, bad input, warm-up."""

import json
import math

import pytest
import torch

from molecule_energy import WARMUP_POS, WARMUP_Z, MoleculeEnergyHandler
from tests.unit.conftest import JSON, call, make_context, make_model_dir
from train.qm9.model import EnergyModel, build_et

XYZ = {"Content-Type": "text/plain"}
# The handler's own warm-up molecule (ethanol, Å): 3 heavy atoms and 6 hydrogens.
Z, POS = WARMUP_Z, WARMUP_POS
SYM = ["C", "C", "O", "H", "H", "H", "H", "H", "H"]
METHANE = {
    "z": [6, 1, 1, 1, 1],
    "pos": [
        [0, 0, 0],
        [0.63, 0.63, 0.63],
        [-0.63, -0.63, 0.63],
        [-0.63, 0.63, -0.63],
        [0.63, -0.63, -0.63],
    ],
}


def xyz_text(symbols, pos, comment="ethanol"):
    rows = [f"{s} {x} {y} {z}" for s, (x, y, z) in zip(symbols, pos)]
    return "\n".join([str(len(symbols)), comment, *rows]) + "\n"


@pytest.fixture(scope="module")
def energy_model():
    torch.manual_seed(0)
    net = build_et(embedding_dimension=16, num_layers=1, num_rbf=8, num_heads=2)
    atomref = torch.zeros(10, dtype=torch.float64)
    atomref[[1, 6, 7, 8, 9]] = torch.tensor([-16.4, -1036.0, -1489.8, -2047.0, -2717.5]).double()
    return EnergyModel(net, atomref, residual_scale=0.5).eval()


@pytest.fixture(scope="module")
def model_dir(energy_model, tmp_path_factory):
    meta = {"elements": {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}, "max_atoms": 32}
    return make_model_dir(tmp_path_factory.mktemp("qm9_et"), energy_model, meta)


@pytest.fixture(scope="module")
def handler(model_dir):
    ctx = make_context(model_dir, "qm9_et", {"max_atoms": 12, "min_distance": 0.5})
    h = MoleculeEnergyHandler()
    h.initialize(ctx)
    return h, ctx


def expected(model, z, pos, forces=False):
    z, pos = torch.tensor(z), torch.tensor(pos, dtype=torch.float32)
    batch = torch.zeros(len(z), dtype=torch.long)
    if forces:
        return model(z, pos, batch, True)
    with torch.no_grad():
        return model(z, pos, batch, False)


def test_warm_up_ran_in_initialize(handler):
    h, _ = handler
    assert h.initialized and h.warmup_seconds > 0


def test_z_atoms_and_xyz_give_the_scripted_models_energy(handler, model_dir):
    h, ctx = handler
    scripted = torch.jit.load(str(model_dir / "model.pt"))
    bodies = [
        json.dumps({"z": Z, "pos": POS}).encode(),
        json.dumps({"atoms": SYM, "pos": POS}).encode(),
        xyz_text(SYM, POS).encode(),
    ]
    out = call(h, ctx, bodies, [JSON, JSON, XYZ])
    want = float(expected(scripted, Z, POS)[0][0])
    for status, body in out:
        assert status == 200, body
        assert body["unit"] == "eV" and "forces" not in body
        assert body["energy"] == pytest.approx(want, abs=1e-5)
    # The reference dominates: the total is the per-element sum plus a small residual.
    assert abs(want - (2 * -1036.0 - 2047.0 + 6 * -16.4)) < 5.0


def test_forces_are_minus_the_energy_gradient(handler, energy_model):
    h, ctx = handler
    [(status, body)] = call(h, ctx, [json.dumps({"z": Z, "pos": POS, "forces": True}).encode()])
    assert status == 200, body
    forces = torch.tensor(body["forces"])
    assert forces.shape == (len(Z), 3) and body["forces_unit"] == "eV/Angstrom"
    # Central finite differences of the eager model's energy, in float64 arithmetic on floats.
    pos = torch.tensor(POS, dtype=torch.float32)
    eps = 1e-2
    for atom, axis in [(0, 0), (2, 1), (5, 2)]:
        plus, minus = pos.clone(), pos.clone()
        plus[atom, axis] += eps
        minus[atom, axis] -= eps
        e_plus = float(expected(energy_model, Z, plus.tolist())[0][0])
        e_minus = float(expected(energy_model, Z, minus.tolist())[0][0])
        fd = -(e_plus - e_minus) / (2 * eps)
        assert float(forces[atom, axis]) == pytest.approx(fd, abs=2e-2 + 0.05 * abs(fd))
    # Net force on an isolated molecule vanishes (translation invariance).
    torch.testing.assert_close(forces.sum(0), torch.zeros(3), atol=1e-4, rtol=0)


def test_forces_from_header_for_xyz_and_json(handler):
    h, ctx = handler
    headers = [{**XYZ, "X-Forces": "true"}, {**JSON, "x-forces": "1"}, {**JSON, "X-Forces": "no"}]
    out = call(
        h,
        ctx,
        [
            xyz_text(SYM, POS).encode(),
            json.dumps({"z": Z, "pos": POS}).encode(),
            json.dumps(METHANE).encode(),
        ],
        headers,
    )
    assert len(out[0][1]["forces"]) == len(SYM) and len(out[1][1]["forces"]) == len(Z)
    assert out[2][0] == 400 and out[2][1]["field"] == "X-Forces"


def test_rotation_leaves_energy_unchanged_and_rotates_forces(handler):
    h, ctx = handler
    theta = 0.7
    rot = torch.tensor(
        [[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]]
    )
    rot = rot @ torch.tensor([[1, 0, 0], [0, 0.6, -0.8], [0, 0.8, 0.6]])
    rotated = (torch.tensor(POS) @ rot.T + torch.tensor([3.0, -2.0, 1.0])).tolist()
    a, b = call(
        h,
        ctx,
        [
            json.dumps({"z": Z, "pos": POS, "forces": True}).encode(),
            json.dumps({"z": Z, "pos": rotated, "forces": True}).encode(),
        ],
    )
    assert abs(a[1]["energy"] - b[1]["energy"]) < 1e-4
    torch.testing.assert_close(
        torch.tensor(a[1]["forces"]) @ rot.T, torch.tensor(b[1]["forces"]), atol=1e-4, rtol=1e-4
    )


def test_batch_and_instances_match_single_requests(handler):
    h, ctx = handler
    single = call(h, ctx, [json.dumps(METHANE).encode()])[0][1]["energy"]
    ethanol = call(h, ctx, [json.dumps({"z": Z, "pos": POS}).encode()])[0][1]["energy"]
    out = call(
        h,
        ctx,
        [
            json.dumps({"z": Z, "pos": POS}).encode(),
            b'{"z": [6], "pos": [[0, 0]]}',
            json.dumps({"instances": [METHANE, {"z": Z, "pos": POS, "forces": True}]}).encode(),
            json.dumps(METHANE).encode(),
        ],
    )
    assert [s for s, _ in out] == [200, 400, 200, 200]
    assert out[0][1]["energy"] == pytest.approx(ethanol, abs=1e-6)
    preds = out[2][1]["predictions"]
    assert preds[0]["energy"] == pytest.approx(single, abs=1e-6) and "forces" not in preds[0]
    assert preds[1]["energy"] == pytest.approx(ethanol, abs=1e-6) and len(preds[1]["forces"]) == 9
    assert out[3][1]["energy"] == pytest.approx(single, abs=1e-6)


BAD = [
    ({"z": [6, 1], "pos": [[0, 0, 0]]}, JSON, "pos", "2 atoms"),
    (
        {"atoms": ["C", "H"], "pos": [[0, 0, 0], [0, 0, 1.1], [0, 0, 2.2]]},
        JSON,
        "pos",
        "must match",
    ),
    ({"z": [6, 17], "pos": [[0, 0, 0], [0, 0, 1.8]]}, JSON, "z", "Cl"),
    ({"z": [6, 0], "pos": [[0, 0, 0], [0, 0, 1.8]]}, JSON, "z", "z[1] = 0"),
    ({"z": [6, True], "pos": [[0, 0, 0], [0, 0, 1.8]]}, JSON, "z", "z[1]"),
    ({"atoms": ["C", "Xx"], "pos": [[0, 0, 0], [0, 0, 1.8]]}, JSON, "atoms", "'Xx'"),
    (b'{"z": [6, 1], "pos": [[0, 0, 0], [0, NaN, 1.1]]}', JSON, "pos", "pos[1][1] = nan"),
    (b'{"z": [6, 1], "pos": [[0, 0, 0], [0, 0, Infinity]]}', JSON, "pos", "not finite"),
    ({"z": [6, 1], "pos": [[0, 0, 0], [0, 0, 0.2]]}, JSON, "pos", "physical minimum"),
    ({"z": [], "pos": []}, JSON, "z", "zero atoms"),
    ({"z": [6], "pos": [[0, 0, "a"]]}, JSON, "pos", "not a number"),
    ({"z": [6], "pos": [[0, 0, 1e9]]}, JSON, "pos", "beyond"),
    ({"pos": [[0, 0, 0]]}, JSON, "z", "missing"),
    ({"z": [6], "pos": [[0, 0, 0]], "forces": "yes"}, JSON, "forces", "true or false"),
    (b"3\nwater\nO 0 0 0\nH 0 0.96 0\n", XYZ, "xyz", "declares 3 atoms but 2"),
    (b"three\nwater\n", XYZ, "xyz", "number of atoms"),
    (b"2\nx\nC 0 0 zero\nH 0 0 1.1\n", XYZ, "xyz", "line 3"),
    (b"2\nx\nC 0 0\nH 0 0 1.1\n", XYZ, "xyz", "line 3"),
    (b"2\nx\nC 0 0 0\nCl 0 0 1.8\n", XYZ, "xyz", "'Cl'"),
    (b"2\nx\nC 0 0 0\nH 0 0 0.1\n", XYZ, "xyz", "physical minimum"),
    (b"0\nempty\n", XYZ, "xyz", "zero atoms"),
    (b"", XYZ, "xyz", "empty"),
    (b'{"z": [6], "pos": [[0, 0, 0]]}', {"Content-Type": "image/png"}, "Content-Type", "png"),
]


@pytest.mark.parametrize(
    "body, headers, field, words", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)]
)
def test_bad_input_is_400_naming_the_field(handler, body, headers, field, words):
    h, ctx = handler
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    [(status, err), (ok_status, ok)] = call(
        h, ctx, [raw, json.dumps(METHANE).encode()], [headers, JSON]
    )
    assert status == 400, err
    assert err["field"] == field, err
    assert words in err["error"], err
    assert ok_status == 200 and math.isfinite(ok["energy"])


TOO_MANY = [
    ({"atoms": ["H"] * 13, "pos": [[i, 0, 0] for i in range(13)]}, JSON, "atoms"),
    ({"z": [1] * 13, "pos": [[i, 0, 0] for i in range(13)]}, JSON, "z"),
    (xyz_text(["H"] * 13, [[i, 0, 0] for i in range(13)]).encode(), XYZ, "xyz"),
]


@pytest.mark.parametrize("body, headers, field", TOO_MANY, ids=["atoms", "z", "xyz"])
def test_too_many_atoms_is_413_as_for_graphs(handler, body, headers, field):
    h, ctx = handler
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    [(status, err), (ok_status, ok)] = call(
        h, ctx, [raw, json.dumps(METHANE).encode()], [headers, JSON]
    )
    assert status == 413, err
    assert err["field"] == field and "13 atoms exceeds the limit of 12" in err["error"], err
    assert ok_status == 200 and math.isfinite(ok["energy"])


def test_limit_above_the_models_capacity_is_refused(model_dir):
    ctx = make_context(model_dir, "qm9_et", {"max_atoms": 64})
    with pytest.raises(ValueError, match="max_atoms"):
        MoleculeEnergyHandler().initialize(ctx)


def test_metrics_atoms_energy_per_atom_and_largest_force(handler, metric_lines):
    h, ctx = handler
    metric_lines()
    out = call(h, ctx, [{**METHANE, "forces": True}, {"z": Z, "pos": POS}])
    lines = metric_lines()
    assert [s for s, _ in out] == [200, 200]
    assert [v for m, _, v, _ in lines if m == "bundle_input_atoms_total"] == [5 + 9]
    per_atom = [v for m, _, v, _ in lines if m == "bundle_energy_per_atom_ev"]
    assert per_atom == pytest.approx([out[0][1]["energy"] / 5, out[1][1]["energy"] / 9], abs=1e-5)
    largest = max(math.dist(f, (0, 0, 0)) for f in out[0][1]["forces"])
    forces = [v for m, _, v, _ in lines if m == "bundle_max_force_norm_ev_per_angstrom"]
    assert forces == pytest.approx([largest], abs=1e-5)  # only the molecule that asked
