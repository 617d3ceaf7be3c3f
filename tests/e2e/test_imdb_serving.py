"""The real torchserve serving imdb_bert and imdb_bert_int8: real reviews, envelope, batching, bad
input. A tiny fine-tune (a few steps, max_length 64) stands in for the trained model."""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from serve.archive import build_mar
from serve.server import start
from tests.conftest import mirror
from train.core.handlers import clean_text
from train.imdb.data import balanced_sample, read_split
from train.imdb.model import Batcher

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NAMES = ["imdb_bert", "imdb_bert_int8"]


@pytest.fixture(scope="module")
def imdb_server(tiny_run, tmp_path_factory):
    # The tiny imdb_bert_int8 run (tests/e2e/conftest.py) trains imdb_bert first, then quantizes.
    artifacts, _ = tiny_run("imdb_bert_int8")
    assert (artifacts / "imdb_bert" / "model.pt").exists()
    store = tmp_path_factory.mktemp("imdb_store")
    for name in NAMES:
        build_mar(name, artifacts, store)
    srv = start(store, tmp_path_factory.mktemp("imdb_ts"), NAMES, artifacts=artifacts)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def reviews():
    """Raw test reviews (HTML breaks included), half of them positive."""
    texts, labels = read_split(Path(mirror()) / "imdb" / "test.csv")
    idx = [i for i in balanced_sample(labels, 200, seed=1) if "<br" in texts[i]][:12]
    return [texts[i] for i in idx]


def scripted(server, name):
    """The exported model with its own meta.json and tokenizer, independent of the handler."""
    art = server.artifacts / name
    meta = json.loads((art / "meta.json").read_text())
    model = torch.jit.load(str(art / "model.pt")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(art / "tokenizer"))
    batcher = Batcher(tokenizer, meta["max_length"], meta["head_tokens"])

    def probs(text: str) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(model(*batcher.encode([clean_text(text, meta["clean"])])), -1)[0]

    return probs, meta["labels"]


def check(pred, p, labels, atol=1e-5):
    assert pred["label"] == labels[int(p.argmax())]
    assert pred["score"] == pytest.approx(float(p.max()), abs=atol)
    assert [pred["probabilities"][k] for k in labels] == pytest.approx(p.tolist(), abs=atol)


@pytest.mark.parametrize("name", NAMES)
def test_served_reviews_equal_scripted_model(imdb_server, reviews, name):
    probs, labels = scripted(imdb_server, name)
    for i, text in enumerate(reviews[:6]):
        if i % 2:
            status, pred, _ = imdb_server.predict(name, text.encode(), "text/plain")
        else:
            status, pred, _ = imdb_server.predict(name, {"text": text})
        assert status == 200, pred
        check(pred, probs(text), labels)


def test_instances_envelope_answers_each_review(imdb_server, reviews):
    probs, labels = scripted(imdb_server, "imdb_bert")
    status, body, _ = imdb_server.predict(
        "imdb_bert", {"instances": [{"text": t} for t in reviews[:5]]}
    )
    assert status == 200, body
    assert len(body["predictions"]) == 5
    for pred, text in zip(body["predictions"], reviews):
        check(pred, probs(text), labels)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(imdb_server, reviews):
    probs, labels = scripted(imdb_server, "imdb_bert")
    texts = reviews * 2
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(
            pool.map(lambda t: imdb_server.predict("imdb_bert", t.encode(), "text/plain"), texts)
        )
    sizes = []
    for text, (status, pred, headers) in zip(texts, results):
        assert status == 200, pred
        check(pred, probs(text), labels)
        sizes.append(int(headers.get("X-Batch-Size", headers.get("x-batch-size", 0))))
    assert max(sizes) > 1, f"no request was batched: {sizes}"


GOOD = "A gripping, beautifully shot film.<br /><br />I loved every minute."
BAD = [
    (b"", "text/plain", 400, "body"),
    (b"  \n\t", "text/plain", 400, "body"),
    (b"<br /><br />", "text/plain", 400, "body"),
    (b"caf\xe9 cr\xe8me", "text/plain", 400, "body"),
    (b'{"text": "caf\xe9"}', "application/json", 400, "body"),
    (b'{"text": "unclosed', "application/json", 400, "body"),
    ({"text": " "}, "application/json", 400, "text"),
    ({"text": ["a"]}, "application/json", 400, "text"),
    ({"review": GOOD}, "application/json", 400, "text"),
    ({"text": GOOD}, "application/x-www-form-urlencoded", 400, "Content-Type"),
    (b"x" * 262145, "text/plain", 413, "body"),
    ({"text": "y" * 262145}, "application/json", 413, "body"),
    ({"instances": [{"text": GOOD}, {"text": ""}]}, "application/json", 400, "instances[1].text"),
    ({"instances": [{"text": GOOD}] * 33}, "application/json", 413, "instances"),
]


@pytest.mark.parametrize("body, ctype, code, field", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_gets_4xx_and_server_keeps_serving(imdb_server, body, ctype, code, field):
    status, err, _ = imdb_server.predict("imdb_bert_int8", body, ctype)
    assert status == code, err
    assert (err["code"], err["field"]) == (code, field), err
    status, ok, _ = imdb_server.predict("imdb_bert_int8", GOOD.encode(), "text/plain")
    assert status == 200 and ok["label"] in ok["probabilities"]


def test_bad_requests_in_concurrent_batches_fail_alone(imdb_server, reviews):
    bodies = [(t.encode(), 200) for t in reviews[:8]] + [(b" ", 400), (b"\xff\xfe", 400)] * 4
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(
            pool.map(lambda b: imdb_server.predict("imdb_bert", b[0], "text/plain"), bodies)
        )
    assert [status for status, _, _ in results] == [code for _, code in bodies]
    # X-Batch-Size on an error response > 1: that bad request shared a forward with others.
    shared = [
        int(h.get("X-Batch-Size", h.get("x-batch-size", 1)))
        for (_, code), (_, _, h) in zip(bodies, results)
        if code == 400
    ]
    assert max(shared) > 1, f"no bad request was batched with others: {shared}"
