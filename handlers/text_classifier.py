"""TorchServe handler for text classification (imdb_bert and its int8 twin imdb_bert_int8).

Request, one review per request (UTF-8):
    text/plain           the review itself
    application/json     {"text": "..."}
                         or {"instances": [{"text": "..."}, ...]} (Vertex AI), answered as
                         {"predictions": [<one response per instance>]}
Response:
    {"label": "positive", "score": 0.97, "probabilities": {"negative": 0.03, "positive": 0.97}}
    where score is the probability of the returned label.
Errors (JSON with code, field, error): 400 for an empty or whitespace-only text, bytes that
are not UTF-8, malformed JSON, a missing or non-string `text`, another Content-Type; 413 for
a body over `max_body_bytes`. A bad request fails alone: the rest of its batch is answered.
"""

from typing import Any

import torch
from model_metrics import TOKENS, Observed
from text_request import clean_text, text_stats, tokenize_cut
from torch import Tensor
from transformers import AutoTokenizer

from contract import TextRequest, validate
from json_batch_handler import JsonBatchHandler, RequestError


class TextClassifierHandler(JsonBatchHandler):
    """Cleans and validates each review; tokenizes the whole batch at once; one forward pass."""

    defaults = {
        **JsonBatchHandler.defaults,
        "max_body_bytes": 262144,
        "max_length": None,  # tokens; None = meta.json's, the length the model was trained at
        "warmup_batches": 2,
    }
    bodies = {
        "text/plain": "read_plain",
        "application/json": "read_sized_json",
        "": "read_sized_json",
    }
    # Every batch has its own (B, T) shape, and the profiling executor re-specialises the graph
    # for each new shape: on CPU that made a call several times slower and gains nothing for
    # these matmul-bound layers.
    jit_optimize = False

    def initialize(self, context: Any) -> None:
        """Loads the model and meta.json, the tokenizer from the model dir (offline), warms up."""
        super().initialize(context)
        model_dir = context.system_properties.get("model_dir")
        self.tokenizer_dir = model_dir
        # The .mar holds the tokenizer files; local_files_only never touches the network.
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.max_length = int(self.config["max_length"] or self.meta["max_length"])
        self.head_tokens = self.meta.get("head_tokens")
        self.rules = self.meta["clean"]
        # The first calls of a TorchScript graph are slower (allocations, lazy init): pay them
        # before the worker reports READY.
        for _ in range(int(self.config["warmup_batches"])):
            self.predict(["warm up", "the first calls are slower " * 8])
        # Tokens the model gets (after the cut), counted in collate, read by observe.
        self.tokens_seen = 0

    def check_length(self, idx: int) -> None:
        """413 from the declared Content-Length, before any of the body is read."""
        limit = self.config["max_body_bytes"]
        length = self.header(idx, "Content-Length")
        # The declared length refuses an oversized body before any of it is decoded or parsed.
        if length and length.isdigit() and int(length) > limit:
            raise RequestError("body", f"{length} bytes exceeds {limit}", 413)

    def read_plain(self, row: dict, idx: int) -> str:
        """Reader of text/plain bodies: the body is the review."""
        self.check_length(idx)
        # Raw bytes (JsonBatchHandler.initialize turns TorchServe's decoding off), decoded here.
        text = self.read_text(row)
        if text is None:
            raise RequestError("body", "empty request body")
        if not isinstance(text, str):
            raise RequestError("body", f"expected text, got {type(text).__name__}")
        return self.parse_text(text)

    def read_sized_json(self, row: dict, idx: int) -> Any:
        """Reader of JSON bodies: `{"text": ...}` or instances, after the length check."""
        self.check_length(idx)
        return self.read_json(row, idx)

    def parse(self, payload: dict[str, Any]) -> str:
        """`{"text": "..."}` to the cleaned review."""
        return self.parse_text(validate(payload, TextRequest).text, "text")

    def parse_text(self, text: str, field: str = "body") -> str:
        """Checks size and Unicode, applies the training-time cleaning; empty is an error."""
        try:
            # JSON can carry lone surrogates ("\\ud800"), which the tokenizer would raise on.
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise RequestError(field, f"not valid Unicode (lone surrogate at {e.start})") from None
        # Also bounds a chunked JSON body, which has no Content-Length to check up front.
        limit = self.config["max_body_bytes"]
        if size > limit:
            raise RequestError(field, f"{size} bytes exceeds {limit}", 413)
        text = clean_text(text, self.rules)
        if not text:
            raise RequestError(field, "the text is empty or whitespace only")
        return text

    def collate(self, items: list[str], tokenizer: Any = None) -> tuple[Tensor, Tensor]:
        """(B, T) input_ids and attention_mask: one tokenizer call for the batch, each review
        cut to max_length tokens (head + tail) without tokenizing a long review's middle,
        padded to the longest review of the batch."""
        on_request_path = tokenizer is None  # the payload log's thread brings its own
        tokenizer = tokenizer or self.tokenizer
        ids = tokenize_cut(tokenizer, items, self.max_length, self.head_tokens)
        if on_request_path:  # only served reviews count in the model metrics
            self.tokens_seen = getattr(self, "tokens_seen", 0) + sum(len(t) for t in ids)
        enc = tokenizer.pad({"input_ids": ids}, padding="longest", return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def respond(self, logits: Tensor, items: list[str]) -> list[dict[str, Any]]:
        """Softmax over the labels, one result per review (in float32: a bf16 model's logits
        would round the probabilities to 3 digits)."""
        probs = torch.softmax(logits.float(), dim=-1)  # (B, C)
        labels = self.meta["labels"]
        results = []
        for p in probs:
            top = int(p.argmax())
            results.append(
                {
                    "label": labels[top],
                    "score": round(float(p[top]), 6),
                    "probabilities": {k: round(float(v), 6) for k, v in zip(labels, p.tolist())},
                }
            )
        return results

    def observe(self, items: list[str], outputs: list[dict]) -> Observed:
        """Tokens of the batch's reviews as the model got them; each answer's label and score."""
        tokens, self.tokens_seen = self.tokens_seen, 0
        return Observed(
            sizes={TOKENS: tokens},
            labels=[out["label"] for out in outputs],
            top1=[out["score"] for out in outputs],
        )

    def drift_tokenizer(self) -> Any:
        """The payload log thread's own tokenizer: a fast tokenizer must not be called from two
        threads at once ("Already borrowed"), and the request path keeps `self.tokenizer`."""
        if getattr(self, "_drift_tokenizer", None) is None:
            self._drift_tokenizer = AutoTokenizer.from_pretrained(
                self.tokenizer_dir, local_files_only=True
            )
        return self._drift_tokenizer

    def drift_stats(self, item: str) -> dict[str, float]:
        """Payload log: token count before the cut, pieces per word, unknown share."""
        tokenizer = self.drift_tokenizer()
        ids = tokenizer(item, verbose=False)["input_ids"]
        return text_stats(item, ids, tokenizer.unk_token_id)

    def drift_embeddings(self, items: list[str]) -> Tensor:
        """(B, H): the model's `embed` on the batch as `collate` builds it, tokenized apart."""
        device = getattr(self, "device", None) or "cpu"
        ids, mask = self.collate(items, self.drift_tokenizer())
        return self.model.embed(ids.to(device), mask.to(device))

    def drift_prediction(self, item: str, result: dict[str, Any]) -> int:
        """Payload log: the predicted label's index."""
        return self.meta["labels"].index(result["label"])
