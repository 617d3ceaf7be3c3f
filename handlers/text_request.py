"""Text request helpers: the exported cleaning rules and the head+tail cut of long token
sequences (body decoding is JsonBatchHandler.read_text)."""

import re
from collections.abc import Sequence
from typing import Optional


def clean_text(text: str, rules: Sequence[Sequence[str]]) -> str:
    """Applies meta.json's (regex, replacement) rules in order, then strips the ends.

    Training applies the same rules from its data config (train/text_data.py); a unit test
    checks that both give the same string on real reviews.
    """
    for pattern, repl in rules:
        text = re.sub(pattern, repl, text)
    return text.strip()


def head_tail(ids: list[int], max_length: int, head: Optional[int]) -> list[int]:
    """Cuts a too-long sequence in the middle: its first `head` and last tokens survive.

    `ids` starts and ends with a special token ([CLS] ... [SEP]), which both stay. None keeps
    the head only. Training cuts with the same lines (train/imdb.py:head_tail).
    """
    if len(ids) <= max_length:
        return ids
    head = max_length - 2 if head is None else min(head, max_length - 2)
    return ids[: head + 1] + ids[len(ids) - (max_length - head - 1) :]
