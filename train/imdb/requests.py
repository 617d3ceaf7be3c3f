"""IMDb reviews as imdb_bert requests: the `example` and `pool` hooks of both IMDb models."""

import random
from typing import Any

from train.core.pools import Payload, json_payload
from train.imdb.data import balanced_sample, imdb_dir, read_split


def imdb_example(data_cfg: Any) -> tuple[str, str, bytes]:
    """`example` hook for imdb_bert(_int8): one real test review as a text/plain request.

    The first review of the fixed test sample that has at least `example_min_words` words, so
    the example is long enough to be truncated at max_length like most IMDb reviews, and its
    raw text still holds the `<br />` tags that the handler cleans.
    """
    path = imdb_dir(data_cfg.root, data_cfg.mirror, data_cfg.get("url")) / "test.csv"
    texts, labels = read_split(path)
    for i in balanced_sample(labels, data_cfg.test_samples, data_cfg.sample_seed):
        if len(texts[i].split()) >= data_cfg.example_min_words:
            return ".txt", "text/plain", texts[i].encode("utf-8")
    raise ValueError("no review in the test sample is long enough for an example")


def imdb_pool(data_cfg: Any, size: int, rng: random.Random) -> list[Payload]:
    """Random raw IMDb test reviews (a few words to ~2,500, `<br />` tags and all): most as
    text/plain, some as JSON {"text": ...}; the JSON form is the Vertex instance of both."""
    folder = imdb_dir(data_cfg.root, data_cfg.mirror, data_cfg.get("url"))
    texts, _ = read_split(folder / "test.csv")
    pool = []
    for i in rng.sample(range(len(texts)), min(size, len(texts))):
        instance = json_payload({"text": texts[i]})
        if rng.random() < 0.7:
            pool.append(Payload(".txt", "text/plain", texts[i].encode(), instance.body))
        else:
            pool.append(instance)
    return pool
