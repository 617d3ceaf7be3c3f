"""QM9 reader (qm9pack CSV layout), reference fit, and the exported EnergyModel."""

import csv

import pytest
import torch
from omegaconf import OmegaConf
from torch_geometric.data import Data

from molecule_request import Limits, from_xyz
from tests.conftest import ROOT, mirror
from train.qm9.data import (
    HARTREE_TO_EV,
    load_qm9,
    pack,
    qm9pack_files,
    read_qm9pack_csv,
    resolve_source,
    split,
    unpack,
    write_qm9pack_csv,
)
from train.qm9.model import EnergyModel, build_et
from train.qm9.requests import to_xyz
from train.qm9.run import fit_reference

HEADER = ["XYZ_file", "Index", "N_atoms", "Elements", "XYZ_Ang", "InternalEnergy_0K_au"]
ROWS = [
    [
        "dsgdb9nsd_000003.xyz",
        "3",
        "3",
        "['O','H','H']",
        "[[-0.03,0.59,0.0],[-0.03,-0.01,0.76],[0.10,-0.10,-0.7]]",
        "-76.404702",
    ],
    [
        "dsgdb9nsd_000001.xyz",
        "1",
        "5",
        "['C','H','H','H','H']",
        "[[0,0,0],[0.63,0.63,0.63],[-0.63,-0.63,0.63],[-0.63,0.63,-0.63],[0.63,-0.63,-0.63]]",
        "-40.47893",
    ],
]


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "qm9.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(ROWS)
    return path


def test_reader_converts_units_and_orders_by_gdb_index(csv_file):
    water_first_in_file, methane = read_qm9pack_csv([csv_file])
    assert int(water_first_in_file.idx) == 1 and int(methane.idx) == 3  # sorted by Index
    assert water_first_in_file.z.tolist() == [6, 1, 1, 1, 1]
    assert methane.z.tolist() == [8, 1, 1]
    assert float(water_first_in_file.y) == pytest.approx(-40.47893 * HARTREE_TO_EV)
    assert methane.pos.shape == (3, 3) and methane.pos.dtype == torch.float32


def test_reader_rejects_inconsistent_rows(tmp_path):
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerow(["x.xyz", "9", "3", "['O','H']", "[[0,0,0],[0,0,1]]", "-1.0"])
    with pytest.raises(ValueError, match="disagree"):
        read_qm9pack_csv([path])


def test_writer_round_trips_and_pack_unpack(csv_file, tmp_path):
    molecules = read_qm9pack_csv([csv_file])
    again = read_qm9pack_csv([write_qm9pack_csv(molecules, tmp_path / "out.csv")])
    back = unpack(pack(molecules))
    for a, b, c in zip(molecules, again, back):
        assert torch.equal(a.z, b.z) and torch.equal(a.z, c.z)
        torch.testing.assert_close(a.pos, b.pos)
        assert float(a.y) == pytest.approx(float(b.y), abs=1e-9) and torch.equal(a.y, c.y)


def test_xyz_round_trip_through_the_handler_parser(csv_file):
    m = read_qm9pack_csv([csv_file])[0]
    limits = Limits({"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}, 32, 0.5, 1000.0)
    parsed = from_xyz(to_xyz(m, "methane"), limits)
    assert torch.equal(parsed.z, m.z)
    torch.testing.assert_close(parsed.pos, m.pos)


def test_split_is_fixed_and_disjoint():
    a = split(100, 0.1, 0.1, 42)
    assert a == split(100, 0.1, 0.1, 42)
    train, val, test = (set(x) for x in a)
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert not (train & val or train & test or val & test)


def test_qm9pack_source_needs_the_package(tmp_path):
    cfg = OmegaConf.create(
        {"source": "qm9pack", "mirror": None, "root": str(tmp_path), "csv": "QM9/x.csv"}
    )
    if qm9pack_files() is None:
        with pytest.raises(ModuleNotFoundError, match="not installed"):
            resolve_source(cfg)
    else:
        assert resolve_source(cfg)[0] == "qm9pack"


@pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")
def test_mirror_subset_is_the_documented_qm9_subset():
    cfg = OmegaConf.create(
        {
            "source": "auto",
            "mirror": mirror(),
            "root": str(ROOT / "data"),
            "csv": "QM9/qm9_subset10k.csv",
        }
    )
    molecules = load_qm9(cfg)
    assert len(molecules) == 10000
    z = torch.cat([m.z for m in molecules])
    assert set(z.unique().tolist()) == {1, 6, 7, 8, 9}
    assert max(m.z.numel() for m in molecules) <= 29
    y = torch.cat([m.y for m in molecules]) / HARTREE_TO_EV
    assert -620.3 < float(y.min()) and float(y.max()) < -132.7


def test_reference_fit_recovers_per_element_energies():
    true = {1: -0.5, 6: -37.8, 8: -75.0}
    molecules = []
    for counts in [(4, 1, 0), (2, 0, 1), (6, 2, 0), (4, 2, 1), (0, 1, 2)]:
        z = [1] * counts[0] + [6] * counts[1] + [8] * counts[2]
        energy = sum(true[v] for v in z)
        molecules.append(Data(z=torch.tensor(z), y=torch.tensor([energy], dtype=torch.float64)))
    atomref = fit_reference(molecules, [1, 6, 8], 10)
    for zz, e in true.items():
        assert float(atomref[zz]) == pytest.approx(e, abs=1e-9)


def test_energy_model_scripts_with_forces_and_float64_reference():
    torch.manual_seed(0)
    atomref = torch.zeros(10, dtype=torch.float64)
    atomref[[1, 6]] = torch.tensor([-16.4, -1036.0], dtype=torch.float64)
    model = EnergyModel(
        build_et(embedding_dimension=16, num_layers=1, num_rbf=8, num_heads=2),
        atomref,
        residual_scale=0.3,
    ).eval()
    scripted = torch.jit.script(model)
    z = torch.tensor([6, 1, 1, 1, 1, 6, 1, 1, 1, 1])
    base = torch.tensor(
        [[0, 0, 0], [0.6, 0.6, 0.7], [-0.6, -0.7, 0.6], [-0.6, 0.6, -0.6], [0.7, -0.6, -0.6]]
    )
    pos = torch.cat([base, base + 20.0])
    batch = torch.tensor([0] * 5 + [1] * 5)
    energy, forces = scripted(z, pos, batch, True)
    e_eager, f_eager = model(z, pos, batch, True)
    assert energy.dtype == torch.float64 and energy.shape == (2,)
    torch.testing.assert_close(energy, e_eager)
    torch.testing.assert_close(forces, f_eager)
    # Far apart and identical: both molecules get the same energy and mirrored forces.
    assert float(energy[0] - energy[1]) == pytest.approx(0.0, abs=1e-5)
    torch.testing.assert_close(forces[:5], forces[5:], atol=1e-5, rtol=1e-4)
    # The reference is the float64 per-element sum.
    ref = model.reference(z, batch, 2)
    assert float(ref[0]) == pytest.approx(-1036.0 + 4 * -16.4, abs=1e-9)
    with torch.no_grad():
        e_only, empty = scripted(z, pos, batch, False)
    assert empty.numel() == 0
    torch.testing.assert_close(e_only, energy)
