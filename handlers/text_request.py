"""Text request helpers: UTF-8 decoding with precise errors, the exported cleaning rules, and
the head+tail cut of long token sequences."""

import re
from collections.abc import Sequence
from typing import Any, Optional

from json_batch_handler import RequestError


def clean_text(text: str, rules: Sequence[Sequence[str]]) -> str:
    """Applies meta.json's (regex, replacement) rules in order, then strips the ends.

    Training applies the same rules from its data config (train/text_data.py); a unit test
    checks that both give the same string on real reviews.
    """
    for pattern, repl in rules:
        text = re.sub(pattern, repl, text)
    return text.strip()


def decode_text(body: Any, max_bytes: int, field: str = "body") -> str:
    """A text/plain body as str: bytes must be UTF-8 and at most max_bytes long (else 413).

    TorchServe hands over text/* bodies already decoded when they are valid UTF-8, and the
    raw bytes when they are not.
    """
    if body is None:
        raise RequestError(field, "empty request body")
    if isinstance(body, str):
        return body
    if not isinstance(body, (bytes, bytearray)):
        raise RequestError(field, f"expected text, got {type(body).__name__}")
    if len(body) > max_bytes:
        raise RequestError(field, f"{len(body)} bytes exceeds {max_bytes}", 413)
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(field, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None


def head_tail(ids: list[int], max_length: int, head: Optional[int]) -> list[int]:
    """Cuts a too-long sequence in the middle: its first `head` and last tokens survive.

    `ids` starts and ends with a special token ([CLS] ... [SEP]), which both stay. None keeps
    the head only. Training cuts with the same lines (train/imdb.py:head_tail).
    """
    if len(ids) <= max_length:
        return ids
    head = max_length - 2 if head is None else min(head, max_length - 2)
    return ids[: head + 1] + ids[len(ids) - (max_length - head - 1) :]
