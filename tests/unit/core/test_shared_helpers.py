"""Training and serving share one copy of each request helper, and it needs no serving stack."""

import subprocess
import sys

import image_request
import text_request

import molecule_energy
import molecule_request
from online import serving
from tests.conftest import ROOT
from train.core import handlers
from train.flowers import data as flowers_data
from train.imdb import data as imdb_data
from train.imdb import model as imdb_model

# -I: isolated mode, so only the repo root (not PYTHONPATH, not pytest's handlers/) is found.
FRESH = """
import sys
sys.path.insert(0, sys.argv[1])
import train.core.handlers
assert "ts" not in sys.modules, "a request helper imported TorchServe"
assert not [m for m in sys.modules if m.startswith("lightning")], "lightning imported"
print("no ts")
"""


def test_the_helpers_import_without_torchserve():
    proc = subprocess.run(
        [sys.executable, "-I", "-c", FRESH, str(ROOT)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no ts" in proc.stdout


def test_training_uses_the_handlers_own_functions():
    assert handlers.HANDLERS == ROOT / "handlers"
    assert flowers_data.decode_image is image_request.decode_image
    assert handlers.to_rgb is image_request.to_rgb
    assert imdb_data.clean_text is text_request.clean_text
    assert imdb_model.tokenize_cut is text_request.tokenize_cut
    # One warm-up molecule: the handler's warm-up and the online loop's drain request.
    assert molecule_energy.WARMUP_Z is molecule_request.WARMUP_Z
    assert serving.DRAIN_REQUEST == {
        "z": molecule_request.WARMUP_Z,
        "pos": molecule_request.WARMUP_POS,
    }
    assert len(serving.DRAIN_REQUEST["z"]) == len(serving.DRAIN_REQUEST["pos"]) == 9


def test_a_request_error_is_a_value_error_with_its_http_code():
    err = handlers.RequestError("x", "too many", 413)
    assert isinstance(err, ValueError) and err.body() == {
        "code": 413,
        "field": "x",
        "error": "x: too many",
    }
