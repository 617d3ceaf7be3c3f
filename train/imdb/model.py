"""The IMDb net: a Hugging Face sequence classifier as a module, and the batch tokenizer.

`Batcher` cuts long reviews with the handler's own head+tail (handlers/text_request.py), so a
review is the same token ids in training, evaluation and serving.
"""

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForSequenceClassification

from train.core.handlers import tokenize_cut


def resolve_pretrained(name: str) -> str:
    """Maps `pkg://<package>/<dir>` to that folder of an installed package; else returns name."""
    if not name.startswith("pkg://"):
        return name
    package, _, sub = name.removeprefix("pkg://").partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{name}: package {package!r} is not installed")
    path = Path(spec.origin).parent / sub
    if not path.is_dir():
        raise FileNotFoundError(f"{name}: {path} does not exist")
    return str(path)


class SequenceClassifier(nn.Module):
    """A Hugging Face sequence classifier as a module: (input_ids, attention_mask) -> logits."""

    def __init__(
        self,
        pretrained: str,
        num_classes: int,
        freeze_embeddings: bool = False,
        dropout: float = 0.1,
        hf_config: Optional[dict[str, Any]] = None,
        in_dim: Optional[int] = None,
    ) -> None:
        """Loads `pretrained` with a new head, or builds the bare architecture from `hf_config`.

        `in_dim` is unused (token ids bring their own vocabulary); it is accepted so that every
        model config instantiates with the same keyword arguments (tests/unit/test_configs.py).
        """
        super().__init__()
        del in_dim
        if hf_config is None:
            self.model = AutoModelForSequenceClassification.from_pretrained(
                resolve_pretrained(pretrained),
                num_labels=num_classes,
                classifier_dropout=dropout,
                attn_implementation="sdpa",
            )
        else:
            config = AutoConfig.for_model(**hf_config)
            config._attn_implementation = "sdpa"
            self.model = AutoModelForSequenceClassification.from_config(config)
        # from_pretrained returns eval mode; a new module trains (dropout on) until .eval().
        self.model.train()
        if freeze_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Returns logits of shape (B, num_classes) for (B, T) token ids and padding mask."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, H): the pooled [CLS] state the classifier reads, the drift monitor's embedding."""
        out = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)
        return out.pooler_output


class Batcher:
    """Tokenizes a list of (text, label) pairs into padded (input_ids, attention_mask, labels).

    Like the handler: pads to the longest review in the batch, and cuts reviews longer than
    max_length tokens with the handler's own `tokenize_cut` (head + tail: IMDb reviews often
    end with the verdict).
    """

    def __init__(self, tokenizer: Any, max_length: int, head_tokens: Optional[int] = None) -> None:
        self.tokenizer, self.max_length, self.head_tokens = tokenizer, max_length, head_tokens

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        ids = tokenize_cut(self.tokenizer, texts, self.max_length, self.head_tokens)
        enc = self.tokenizer.pad({"input_ids": ids}, padding="longest", return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def __call__(self, pairs: Sequence[tuple[str, int]]) -> tuple[Tensor, Tensor, Tensor]:
        ids, mask = self.encode([t for t, _ in pairs])
        return ids, mask, torch.tensor([y for _, y in pairs])


def load_eager(art: Path) -> SequenceClassifier:
    """The fp32 model of an exported artifact, rebuilt from hf_config.json and state_dict.pt."""
    hf = json.loads((art / "hf_config.json").read_text())
    net = SequenceClassifier("", num_classes=hf.get("num_labels", 2), hf_config=hf)
    net.load_state_dict(torch.load(art / "state_dict.pt"))
    return net.eval()
