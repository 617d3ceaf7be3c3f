"""`make predict` (serve/predict.py): a real .mar of a tiny GCN, answered by the real command.

The command runs as a subprocess, as `make predict` runs it: the handler caps its process's
address space (memory_limit_mib), which must not land on the test process.
"""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from serve.archive import build_mar
from serve.config import ROOT
from serve.predict import content_type, requests_of
from train.graph.models import GCN

NAME = "cora_gcn"
LABELS = ["a", "b", "c"]
GOOD = {"x": [[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 2, 0, 0]], "edge_index": [[0, 1], [1, 0]]}
OTHER = {"x": [[0, 3, 0, 1, 0], [1, 1, 0, 0, 0]], "edge_index": [[0, 1], [1, 0]], "nodes": [1]}
BAD = {"x": [[1.0, 2.0]], "edge_index": [[0], [0]]}  # 2 features, the model takes 5


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return GCN(5, 4, len(LABELS), 0.5).eval()


@pytest.fixture(scope="module")
def store(net, tmp_path_factory) -> Path:
    """A real .mar (torch-model-archiver) of a tiny GCN with cora_gcn's handler and config."""
    root = tmp_path_factory.mktemp("predict")
    art = root / "artifacts" / NAME
    art.mkdir(parents=True)
    torch.jit.script(net).save(str(art / "model.pt"))
    meta = {"name": NAME, "feature_dim": 5, "normalize": "row_sum", "labels": LABELS}
    (art / "meta.json").write_text(json.dumps(meta))
    (art / "metrics.json").write_text("{}")
    build_mar(NAME, root / "artifacts", root / "store")
    return root / "store"


def predict(store: Path, path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "serve.predict", NAME, str(path), "--store", str(store), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_jsonl_gives_one_answer_per_line_in_order(store, net, tmp_path):
    """Each line's answer is the one it gets alone; the bad line gets its 400, the others theirs."""
    lines = [json.dumps(GOOD), json.dumps(BAD), "", json.dumps(OTHER)]
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    out = predict(store, tmp_path / "requests.jsonl")
    assert out.returncode == 1, out.stderr
    answers = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(answers) == 3  # the blank line is no request
    assert answers[1]["code"] == 400 and answers[1]["field"] == "x"
    # The error names its line (the fourth file line is the third request).
    assert f"{tmp_path / 'requests.jsonl'}:2: 400 Bad Request" in out.stderr
    assert ":4:" not in out.stderr
    for i, request in ((0, GOOD), (2, OTHER)):
        (tmp_path / f"alone{i}.json").write_text(json.dumps(request))
        alone = predict(store, tmp_path / f"alone{i}.json")
        assert alone.returncode == 0, alone.stderr
        assert answers[i] == json.loads(alone.stdout)
    # The first answer is the scripted model's own output on the row-normalised features.
    x = torch.tensor(GOOD["x"], dtype=torch.float)
    with torch.no_grad():
        probs = net(x / x.sum(1, keepdim=True), torch.tensor(GOOD["edge_index"])).softmax(-1)
    served = [[p["probabilities"][c] for c in LABELS] for p in answers[0]["predictions"]]
    torch.testing.assert_close(torch.tensor(served), probs, atol=1e-5, rtol=0)


def test_a_refused_request_prints_the_servers_error_and_fails(store, tmp_path):
    (tmp_path / "photo.png").write_bytes(b"not a png")
    out = predict(store, tmp_path / "photo.png")
    assert out.returncode == 1
    assert json.loads(out.stdout) == {
        "code": 400,
        "field": "Content-Type",
        "error": "Content-Type: expected application/json, got image/png",
    }
    assert out.stderr.strip().endswith("photo.png: 400 Bad Request")
    # CONTENT_TYPE overrides the extension; the body is then read (and refused) as JSON.
    out = predict(store, tmp_path / "photo.png", "--content-type", "application/json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"].startswith("body: malformed JSON")


def test_a_missing_mar_names_the_fix(tmp_path):
    (tmp_path / "r.json").write_text("{}")
    out = predict(tmp_path, tmp_path / "r.json")
    assert out.returncode == 2 and out.stdout == ""
    assert "make archive" in out.stderr


def test_content_type_from_the_extension_else_the_bytes(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    cases = {
        "a.json": (b"{}", "application/json"),
        "a.txt": (b"{}", "text/plain"),
        "a.jpg": (b"", "image/jpeg"),
        "photo": (png.getvalue(), "image/png"),
        "request": (b'{"x": 1}', "application/json"),
        "review": ("Très bien.".encode(), "text/plain"),
        "blob": (b"\xff\xfe\x00", "application/octet-stream"),
    }
    for name, (body, expected) in cases.items():
        assert content_type(Path(name), body) == expected, name
    (tmp_path / "r.ndjson").write_bytes(b'{"a": 1}\r\n\n{"a": 2}')
    found = requests_of(tmp_path / "r.ndjson", None)
    # Blank lines are no requests; each label is the file's own line number.
    assert [(label.rsplit(":", 1)[1], body) for label, body, _ in found] == [
        ("1", b'{"a": 1}'),
        ("3", b'{"a": 2}'),
    ]


def test_loading_a_capped_handler_in_process_leaves_this_process_uncapped(store, tmp_path):
    """cora_gcn's config caps its worker's address space (memory_limit_mib); loaded in-process
    (make bench, profile, predict, bench-compile) the cap must not stay on the loading process,
    whose later children (the JVM of the server it starts) could not reserve their memory."""
    import resource

    from serve.inprocess import load_service, unpack

    before = resource.getrlimit(resource.RLIMIT_AS)
    service = load_service(unpack(store / f"{NAME}.mar", tmp_path))
    assert service._entry_point.__self__.config["memory_limit_mib"]
    assert resource.getrlimit(resource.RLIMIT_AS) == before
