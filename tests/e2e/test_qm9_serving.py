"""The real torchserve serving qm9_et: fidelity on real QM9 molecules, rotation invariance,
forces, XYZ, batching and bad input."""

import json
import math
import shutil
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from serve.archive import build_mar
from serve.client import token
from serve.server import start
from train.qm9.data import loader
from train.qm9.requests import to_request, to_xyz
from train.qm9.run import load_splits

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def qm9(tiny_run, tmp_path_factory):
    """The tiny qm9_et (tests/e2e/conftest.py: a small ET, one epoch), archived and served."""
    if shutil.which("java") is None:
        pytest.fail("java is not installed: run scripts/ensure_java.sh")
    artifacts, cfg = tiny_run("qm9_et")
    store = tmp_path_factory.mktemp("qm9_store")
    build_mar("qm9_et", artifacts, store)
    started = time.perf_counter()
    srv = start(store, tmp_path_factory.mktemp("qm9_ts"), ["qm9_et"], artifacts=artifacts)
    ready = time.perf_counter() - started
    _, _, test_set = load_splits(cfg)
    model = torch.jit.load(str(artifacts / "qm9_et" / "model.pt")).eval()
    yield srv, model, test_set, ready
    srv.stop()


def scripted_energy(model, molecules):
    b = next(iter(loader(molecules, len(molecules))))
    with torch.no_grad():
        return model(b.z, b.pos, b.batch, False)[0]


def random_rotation(seed):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed)))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def test_first_request_is_warm_and_served_energy_is_the_scripted_models(qm9):
    srv, model, test_set, ready = qm9
    t = time.perf_counter()
    status, body, _ = srv.predict("qm9_et", to_request(test_set[0]))
    first = time.perf_counter() - t
    assert status == 200, body
    print(f"\nqm9_et: server READY after {ready:.1f}s; first request {first * 1000:.0f} ms")
    # The warm-up ran in initialize, before READY (its log line comes from the worker).
    log = (srv.log_dir / "model_log.log").read_text()
    assert "qm9 warm-up took" in log
    want = scripted_energy(model, test_set[:1])[0]
    assert body["energy"] == pytest.approx(float(want), abs=1e-5) and body["unit"] == "eV"


def test_served_energies_equal_scripted_model_on_real_molecules(qm9):
    srv, model, test_set, _ = qm9
    molecules = test_set[:8]
    want = scripted_energy(model, molecules)
    for i, m in enumerate(molecules):
        for body, ctype in [
            (to_request(m, as_atoms=i % 2 == 0), "application/json"),
            (to_xyz(m, f"gdb {int(m.idx)}").encode(), "text/plain"),
        ]:
            status, got, _ = srv.predict("qm9_et", body, ctype)
            assert status == 200, got
            assert got["energy"] == pytest.approx(float(want[i]), abs=1e-5)
    # And the served model is a real fit: closer to the DFT U0 than 1 eV per molecule on average.
    true = torch.cat([m.y for m in molecules])
    assert float((want - true).abs().mean()) < 1.0


def test_rotated_molecules_get_the_same_energy(qm9):
    srv, _, test_set, _ = qm9
    for seed, m in enumerate(test_set[:4]):
        status, ref, _ = srv.predict("qm9_et", to_request(m))
        assert status == 200
        rot = random_rotation(seed)
        turned = m.clone()
        turned.pos = m.pos @ rot.T + torch.tensor([1.5, -3.0, 0.25])
        status, got, _ = srv.predict("qm9_et", to_request(turned))
        assert status == 200
        assert abs(got["energy"] - ref["energy"]) < 1e-4, (got, ref)


def test_forces_by_field_and_header(qm9):
    srv, model, test_set, _ = qm9
    m = test_set[1]
    status, body, _ = srv.predict("qm9_et", to_request(m, forces=True))
    assert status == 200, body
    b = next(iter(loader([m], 1)))
    _, want = model(b.z, b.pos, b.batch, True)
    torch.testing.assert_close(torch.tensor(body["forces"]), want.detach(), atol=1e-5, rtol=1e-4)
    status, xyz_body, _ = predict_with_header(srv, to_xyz(m).encode(), "text/plain")
    assert status == 200, xyz_body
    torch.testing.assert_close(
        torch.tensor(xyz_body["forces"]), want.detach(), atol=1e-5, rtol=1e-4
    )
    status, plain, _ = srv.predict("qm9_et", to_request(m))
    assert "forces" not in plain


def test_concurrent_requests_are_batched(qm9):
    srv, model, test_set, _ = qm9
    molecules = test_set[:10] * 3
    want = scripted_energy(model, test_set[:10]).tolist() * 3
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda m: srv.predict("qm9_et", to_request(m)), molecules))
    sizes = []
    for (status, body, headers), w in zip(results, want):
        assert status == 200, body
        assert body["energy"] == pytest.approx(w, abs=1e-5)
        sizes.append(int(headers.get("X-Batch-Size", headers.get("x-batch-size", 0))))
    assert max(sizes) > 1, f"no request was batched: {sizes}"


def predict_with_header(srv, body, ctype):
    req = urllib.request.Request(
        f"{srv.inference}/predictions/qm9_et",
        data=body,
        method="POST",
        headers={
            "Content-Type": ctype,
            "X-Forces": "true",
            "Authorization": f"Bearer {token('inference', srv.key_file)}",
        },
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, json.loads(resp.read()), dict(resp.headers)


def _far(n):
    return [[2.0 * i, 0.0, 0.0] for i in range(n)]


BAD = [
    ({"z": [6, 1], "pos": [[0, 0, 0]]}, "application/json", "pos"),
    ({"z": [6, 17], "pos": [[0, 0, 0], [0, 0, 1.8]]}, "application/json", "z"),
    ({"atoms": ["C", "Q"], "pos": [[0, 0, 0], [0, 0, 1.8]]}, "application/json", "atoms"),
    (b'{"z": [6, 1], "pos": [[0, 0, 0], [NaN, 0, 1.1]]}', "application/json", "pos"),
    (b'{"z": [6, 1], "pos": [[0, 0, 0], [0, 0, -Infinity]]}', "application/json", "pos"),
    ({"z": [1, 1], "pos": [[0, 0, 0], [0, 0, 0.05]]}, "application/json", "pos"),
    ({"z": [], "pos": []}, "application/json", "z"),
    (b"2\ncomment\nC 0 0 0\n", "text/plain", "xyz"),
    (b"C 0 0 0\nH 0 0 1.1\n", "text/plain", "xyz"),
    (b"2\ncomment\nC 0 0 0\nH 0 x 1.1\n", "text/plain", "xyz"),
]


@pytest.mark.parametrize("body, ctype, field", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_400_and_the_next_request_succeeds(qm9, body, ctype, field):
    srv, _, test_set, _ = qm9
    status, err, _ = srv.predict("qm9_et", body, ctype)
    assert status == 400, err
    assert err["field"] == field and field in err["error"], err
    status, ok, _ = srv.predict("qm9_et", to_request(test_set[0]))
    assert status == 200 and math.isfinite(ok["energy"])


def test_too_many_atoms_is_413_as_for_graphs(qm9):
    srv, _, test_set, _ = qm9
    status, err, _ = srv.predict("qm9_et", {"z": [1] * 33, "pos": _far(33)})
    assert status == 413, err
    assert err["field"] == "z" and "33 atoms exceeds the limit of 32" in err["error"], err
    status, ok, _ = srv.predict("qm9_et", to_request(test_set[0]))
    assert status == 200 and math.isfinite(ok["energy"])


def test_instances_envelope(qm9):
    srv, model, test_set, _ = qm9
    body = {"instances": [to_request(m) for m in test_set[:3]]}
    status, got, _ = srv.predict("qm9_et", json.dumps(body).encode())
    assert status == 200, got
    want = scripted_energy(model, test_set[:3])
    assert [p["energy"] for p in got["predictions"]] == pytest.approx(want.tolist(), abs=1e-5)
