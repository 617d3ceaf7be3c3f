"""Text request helpers: the exported cleaning rules and the head+tail cut of long token
sequences (body decoding is JsonBatchHandler.read_text). Training imports these same functions
(train/core/handlers.py), so a review is cleaned and cut once, the same way, in both."""

import re
from collections.abc import Sequence
from typing import Optional


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
