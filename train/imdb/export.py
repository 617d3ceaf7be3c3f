"""Export of an IMDb classifier: traced over (input_ids, attention_mask), with its tokenizer."""

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from train.core.handlers import text_stats
from train.core.reference import sample, write_reference
from train.imdb.model import Batcher

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"  # under artifacts/<name>/; its files go to the .mar's root


def file_mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def export_traced(
    net: nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    tokenizer: Any,
    out_dir: str | Path,
    meta: dict[str, Any],
    metrics: dict[str, Any],
    atol: float = 1e-4,
) -> Path:
    """Traces `net` on batches[0], checks the saved file on every batch, writes the artifact.

    batches[0] must have padding (zeros in its mask), so that nothing about "no padding" is
    recorded; the others have other batch sizes and lengths. Writes model.pt (TorchScript),
    state_dict.pt and hf_config.json (to rebuild the eager model, e.g. for int8), the
    tokenizer files, meta.json and metrics.json. The traced module also has `embed`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    ids, mask = batches[0]
    assert bool((mask == 0).any()), "trace on a padded batch"
    with torch.no_grad():
        # `embed` (the pooled [CLS] state) is traced beside `forward`, for the drift monitor.
        traced = torch.jit.trace_module(
            net, {"forward": (ids, mask), "embed": (ids, mask)}, check_trace=False
        )
    traced.save(str(out / "model.pt"))
    reloaded = torch.jit.load(str(out / "model.pt"))
    with torch.no_grad():
        for ids, mask in batches:
            torch.testing.assert_close(reloaded(ids, mask), net(ids, mask), atol=atol, rtol=1e-4)
            torch.testing.assert_close(
                reloaded.embed(ids, mask), net.embed(ids, mask), atol=atol, rtol=1e-4
            )
    torch.save(net.state_dict(), out / "state_dict.pt")
    hf = net.model.config.to_dict() if hasattr(net, "model") else {}
    (out / "hf_config.json").write_text(json.dumps(hf, indent=2) + "\n")
    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    metrics = {**metrics, "model_pt_mb": file_mb(out / "model.pt")}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("exported %s: %s", out, metrics)
    return out


@torch.inference_mode()
def write_text_reference(
    net: nn.Module,
    batcher: Batcher,
    texts: Sequence[str],
    out_dir: str | Path,
    meta: dict,
    seed: int,
) -> Path:
    """The drift reference: sampled training reviews (cleaned, as the handler sees them), with
    the model's pooled embedding and predicted label."""
    net.eval()
    picked = [texts[i] for i in sample(len(texts), seed)]
    tok = batcher.tokenizer
    stats = [
        text_stats(t, ids, tok.unk_token_id)
        for t, ids in zip(picked, tok(picked, verbose=False)["input_ids"])
    ]
    emb, pred = [], []
    for i in range(0, len(picked), 32):
        ids, mask = batcher.encode(picked[i : i + 32])
        emb.append(net.embed(ids, mask))
        pred += net(ids, mask).argmax(-1).tolist()
    return write_reference(out_dir, meta["name"], stats, torch.cat(emb), pred, meta["labels"])


def shape_checks(batcher: Batcher, texts: Sequence[str]) -> list[tuple[Tensor, Tensor]]:
    """Export inputs from real reviews: padded batch of 2 (traced), then other shapes.

    Lengths: the first words of a review and the longest review padded together, those words
    alone (no padding), the 5 longest reviews, and the 3 longest cut to 40 words.
    """
    by_len = sorted(texts[:64], key=len)
    short, long = " ".join(by_len[0].split()[:6]), by_len[-1]
    cut = [" ".join(t.split()[:40]) for t in by_len[-3:]]
    return [
        batcher.encode([short, long]),
        batcher.encode([short]),
        batcher.encode(by_len[-5:]),
        batcher.encode(cut),
    ]


def base_meta(cfg: DictConfig) -> dict[str, Any]:
    """What the handler needs: labels, cleaning rules, max_length, input names."""
    return {
        "name": cfg.name,
        "task": "text_classification",
        "labels": list(cfg.data.labels),
        "clean": [list(rule) for rule in cfg.data.clean],
        "max_length": cfg.data.max_length,
        "head_tokens": cfg.data.head_tokens,
        "inputs": ["input_ids", "attention_mask"],
        "pretrained": cfg.model.net.pretrained,
        "quantization": None,
    }
