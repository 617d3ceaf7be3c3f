"""`make predict` against the real torchserve: the same .mar, the same body, the same answer.

For every registered model, its real example (train/core/examples.py) goes to the session's
torchserve and to `python -m serve.predict` (the command `make predict` runs, in a process of
its own, the Content-Type inferred from the file); the printed JSON must equal the served one.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serve.config import ROOT
from train.core.registry import served_models

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def predict(store: Path, name: str, path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "serve.predict", name, str(path), "--store", str(store)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=300)


@pytest.mark.parametrize("name", served_models())
def test_predict_prints_the_served_answer(
    every_model_server, every_model_store, examples_dir, name
):
    """The model's example, in the Content-Type its index names, answered as the server does."""
    entry = json.loads((examples_dir / "index.json").read_text())[name]
    path = examples_dir / entry["file"]
    status, served, _ = every_model_server.predict(name, path.read_bytes(), entry["content_type"])
    assert status == 200, served
    out = predict(every_model_store, name, path)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert json.loads(out.stdout) == served


@pytest.mark.parametrize("name", served_models())
def test_predict_prints_the_served_error(every_model_server, every_model_store, tmp_path, name):
    """A malformed JSON body: the server's status and JSON error, and a failing exit code."""
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"x": [1,')
    status, served, _ = every_model_server.predict(name, path.read_bytes(), "application/json")
    assert 400 <= status < 500, served
    out = predict(every_model_store, name, path)
    assert out.returncode == 1
    assert json.loads(out.stdout) == served
    assert out.stderr.decode().strip().endswith(f"bad.json: {status} Bad Request")
