"""IMDb reviews held out and shifted: the `shifts` hook of imdb_bert and imdb_bert_int8.

typos (adjacent letters swapped, per character), word dropout, truncation to the first share of
the words, shouting (a share of the words in capitals), and non-review text: a share of the
requests replaced by paragraphs of the Python standard library's own documentation, English
prose that is no film review (available offline). A non-review request has no truth and is
not scored; it is what the monitor must notice.
"""

import importlib
import inspect
import random
from typing import Any

from train.core.shifts import Case, Shift, ShiftSet, json_case
from train.imdb.data import balanced_sample, imdb_dir, read_split

DOC_MODULES = (
    "argparse", "asyncio", "collections", "csv", "datetime", "email", "functools", "http.client",
    "json", "logging", "os", "pathlib", "random", "shutil", "socket", "statistics", "subprocess",
    "tarfile", "threading", "unittest", "urllib.request", "zipfile",
)  # fmt: skip


def non_reviews(min_words: int = 30) -> list[str]:
    """Paragraphs of at least `min_words` words from the standard library's docstrings."""
    out = []
    for name in DOC_MODULES:
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj) if callable(obj) or inspect.ismodule(obj) else None
            for para in (doc or "").split("\n\n"):
                text = " ".join(para.split())
                if len(text.split()) >= min_words:
                    out.append(text)
    return sorted(set(out))


def typos(text: str, p: float, rng: random.Random) -> str:
    chars = list(text)
    for i in range(len(chars) - 1):
        if chars[i].isalpha() and chars[i + 1].isalpha() and rng.random() < p:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars)


def word_dropout(text: str, p: float, rng: random.Random) -> str:
    words = text.split()
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept or words[:1])


def truncate(text: str, keep: float, rng: random.Random) -> str:
    words = text.split()
    return " ".join(words[: max(1, round(len(words) * keep))])


def shout(text: str, p: float, rng: random.Random) -> str:
    return " ".join(w.upper() if rng.random() < p else w for w in text.split())


def imdb_shifts(data_cfg: Any, size: int, rng: random.Random) -> ShiftSet:
    """`size` reviews of the fixed balanced test sample (the one training scored)."""
    texts, labels = read_split(
        imdb_dir(data_cfg.root, data_cfg.mirror, data_cfg.get("url")) / "test.csv"
    )
    sample = balanced_sample(labels, data_cfg.test_samples, data_cfg.sample_seed)
    picks = sorted(rng.sample(list(sample), min(size, len(sample))))
    reviews = [(texts[i], int(labels[i])) for i in picks]
    seed = rng.randrange(2**31)

    def make(fn: Any) -> Any:
        def at(severity: float) -> list[Case]:
            r = random.Random(seed)
            return [json_case({"text": fn(t, severity, r)}, y) for t, y in reviews]

        return at

    def replaced(share: float) -> list[Case]:
        r = random.Random(seed)
        docs = non_reviews()
        return [
            json_case({"text": r.choice(docs)}, None)
            if r.random() < share
            else json_case({"text": t}, y)
            for t, y in reviews
        ]

    return ShiftSet(
        clean=[json_case({"text": t}, y) for t, y in reviews],
        shifts={
            "typos": Shift([0.02, 0.05, 0.1], make(typos), unit="p/char"),
            "word_dropout": Shift([0.1, 0.3, 0.5], make(word_dropout), unit="p"),
            "truncation": Shift([0.5, 0.25, 0.1], make(truncate), unit="share kept"),
            "shouting": Shift([0.3, 0.6, 1.0], make(shout), unit="share"),
            "non_review": Shift([0.25, 0.5, 1.0], replaced, unit="share"),
        },
    )
