"""Text request helpers: the exported cleaning rules and the head+tail cut of long token
sequences (body decoding is JsonBatchHandler.read_text). Training imports these same functions
(train/core/handlers.py), so a review is cleaned, tokenized and cut the same way in both."""

import re
from collections.abc import Sequence
from typing import Any, Optional

# Words beyond the head and tail budgets that a long text keeps before it is tokenized: spare
# words for the ones that make no token (control characters only, or the empty word between two
# spaces). When they do not suffice, the text is tokenized whole.
SPARE_WORDS = 8


def clean_text(text: str, rules: Sequence[Sequence[str]]) -> str:
    """Applies meta.json's (regex, replacement) rules in order, then strips the ends.

    Training calls this function with the same rules from its data config (train/imdb/data.py).
    """
    for pattern, repl in rules:
        text = re.sub(pattern, repl, text)
    return text.strip()


def head_tail(ids: list[int], max_length: int, head: Optional[int]) -> list[int]:
    """Cuts a too-long sequence in the middle: its first `head` and last tokens survive.

    `ids` starts and ends with a special token ([CLS] ... [SEP]), which both stay. None keeps
    the head only. Training's Batcher (train/imdb/model.py) cuts with this function.
    """
    if len(ids) <= max_length:
        return ids
    head = max_length - 2 if head is None else min(head, max_length - 2)
    return ids[: head + 1] + ids[len(ids) - (max_length - head - 1) :]


def tokenize_cut(
    tokenizer: Any, texts: Sequence[str], max_length: int, head: Optional[int]
) -> list[list[int]]:
    """Each text's ids exactly as `head_tail(tokenizer(text)["input_ids"], ...)`, in one
    tokenizer call, without tokenizing the middle of a long text.

    Tokenizing is linear in the text: a 256 KB review cost about 200 ms of worker CPU for the
    256 tokens the model reads. A text of more words than the budget is cut at ASCII spaces
    first: its head words and its tail words are tokenized as two texts. Every BERT normalizer
    and pre-tokenizer splits at a space, so the tokens of the kept words are the full text's
    own; the cut is used only when the head part has at least `head` tokens and the tail part
    the rest (a word can make none), else the text is tokenized whole.
    """
    kept = max_length - 2 if head is None else min(head, max_length - 2)
    tail = max_length - 2 - kept
    parts: list[str] = []
    cut: list[bool] = []
    for text in texts:
        words = text.split(" ")
        cut.append(len(words) > kept + tail + 2 * SPARE_WORDS)
        if cut[-1]:
            parts += [
                " ".join(words[: kept + SPARE_WORDS]),
                " ".join(words[len(words) - tail - SPARE_WORDS :]),
            ]
        else:
            parts.append(text)
    ids = iter(tokenizer(parts, verbose=False)["input_ids"])
    out = []
    for text, was_cut in zip(texts, cut):
        first = next(ids)
        if not was_cut:
            out.append(head_tail(first, max_length, head))
            continue
        last = next(ids)  # [CLS] ... [SEP] each
        if len(first) - 2 >= kept and len(last) - 2 >= tail:
            out.append(first[: kept + 1] + last[len(last) - tail - 1 :])
        else:
            whole = tokenizer(text, verbose=False)["input_ids"]
            out.append(head_tail(whole, max_length, head))
    return out


def text_stats(text: str, ids: list[int], unk_id: Optional[int]) -> dict[str, float]:
    """The drift monitor's input statistics of one cleaned review and its token ids (before the
    cut): token count, word pieces per word, the share of unknown tokens, and the share of its
    letters that are capitals.

    Gibberish and other languages split into many pieces per word. The tokenizer is uncased, so
    shouting reaches the model unchanged and only `upper_frac` sees it: a client that started
    sending upper-cased text (an OCR or a form that shouts) is still a change of input. The
    handler's payload log and training's reference profile (train/core/reference.py) both call
    this function.
    """
    words = max(len(text.split()), 1)
    pieces = max(len(ids) - 2, 0)  # without [CLS] and [SEP]
    unknown = sum(1 for t in ids if t == unk_id) if unk_id is not None else 0
    letters = sum(1 for c in text if c.isalpha())
    upper = sum(1 for c in text if c.isupper())
    return {
        "tokens": float(len(ids)),
        "pieces_per_word": pieces / words,
        "unknown_frac": unknown / max(pieces, 1),
        "upper_frac": upper / max(letters, 1),
    }
