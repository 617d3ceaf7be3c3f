"""IMDb sentiment with a fine-tuned BERT: config -> data -> model -> fit -> evaluate -> export.

`run` trains imdb_bert; `run_int8` quantizes its weights into imdb_bert_int8. Both export a
model traced over (input_ids, attention_mask) with the tokenizer files beside it.
`python -m train.imdb eval experiment=imdb_bert [overrides]` evaluates an exported artifact
(the TorchScript file the handler serves, cleaning rules from its meta.json, its tokenizer)
on the configured test sample, e.g. `data.test_samples=null` for all 25,000 reviews.
"""

import copy
import importlib.util
import json
import logging
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn
from torch.ao.quantization import (
    default_dynamic_qconfig,
    per_channel_dynamic_qconfig,
    quantize_dynamic,
)
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from train.common import finish_logger, make_trainer
from train.text_data import clean_text, load_imdb

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"  # under artifacts/<name>/; its files go to the .mar's root


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


def head_tail(ids: list[int], max_length: int, head: Optional[int]) -> list[int]:
    """Cuts a too-long sequence in the middle: its first `head` and last tokens survive.

    `ids` starts and ends with a special token ([CLS] ... [SEP]), which both stay. None keeps
    the head only, like the tokenizer's own truncation. The handler's copy of these lines
    (handlers/text_request.py) is checked against this one in tests/unit/test_imdb_handler.py.
    """
    if len(ids) <= max_length:
        return ids
    head = max_length - 2 if head is None else min(head, max_length - 2)
    return ids[: head + 1] + ids[len(ids) - (max_length - head - 1) :]


class Batcher:
    """Tokenizes a list of (text, label) pairs into padded (input_ids, attention_mask, labels).

    Like the handler: pads to the longest review in the batch, and cuts reviews longer than
    max_length tokens with `head_tail` (IMDb reviews often end with the verdict).
    """

    def __init__(self, tokenizer: Any, max_length: int, head_tokens: Optional[int] = None) -> None:
        self.tokenizer, self.max_length, self.head_tokens = tokenizer, max_length, head_tokens

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        ids = self.tokenizer(list(texts), verbose=False)["input_ids"]
        ids = [head_tail(t, self.max_length, self.head_tokens) for t in ids]
        enc = self.tokenizer.pad({"input_ids": ids}, padding="longest", return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def __call__(self, pairs: Sequence[tuple[str, int]]) -> tuple[Tensor, Tensor, Tensor]:
        ids, mask = self.encode([t for t, _ in pairs])
        return ids, mask, torch.tensor([y for _, y in pairs])


class SentimentClassifier(L.LightningModule):
    """Fine-tunes a SequenceClassifier with AdamW and a linear warm-up/decay schedule."""

    def __init__(self, net: nn.Module, lr: float, weight_decay: float, warmup_ratio: float) -> None:
        super().__init__()
        self.net = net
        self.save_hyperparameters(ignore=["net"])

    def configure_optimizers(self) -> Any:
        # As in HF run_glue: no weight decay on biases and LayerNorm weights.
        decay, no_decay = [], []
        for p in self.net.parameters():
            if p.requires_grad:
                (no_decay if p.ndim == 1 else decay).append(p)
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.hparams.warmup_ratio * total)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _step(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> Tensor:
        ids, mask, y = batch
        logits = self.net(ids, mask)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=len(y))
        self.log(f"{stage}_acc", acc, prog_bar=True, batch_size=len(y))
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")


@torch.inference_mode()
def evaluate(
    forward: Callable[[Tensor, Tensor], Tensor],
    texts: Sequence[str],
    labels: Sequence[int],
    batcher: Batcher,
    batch_size: int,
) -> dict[str, Any]:
    """Accuracy of `forward` over the reviews; batches hold reviews of similar length."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    correct, start = 0, time.perf_counter()
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        ids, mask = batcher.encode([texts[i] for i in idx])
        pred = forward(ids, mask).argmax(-1)
        correct += int((pred == torch.tensor([labels[i] for i in idx])).sum())
    seconds = time.perf_counter() - start
    return {
        "acc": round(correct / max(1, len(texts)), 4),
        "n": len(texts),
        "reviews_per_s": round(len(texts) / seconds, 1),
    }


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
    tokenizer files, meta.json and metrics.json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    ids, mask = batches[0]
    assert bool((mask == 0).any()), "trace on a padded batch"
    with torch.no_grad():
        traced = torch.jit.trace(net, (ids, mask), check_trace=False)
    traced.save(str(out / "model.pt"))
    reloaded = torch.jit.load(str(out / "model.pt"))
    with torch.no_grad():
        for ids, mask in batches:
            torch.testing.assert_close(reloaded(ids, mask), net(ids, mask), atol=atol, rtol=1e-4)
    torch.save(net.state_dict(), out / "state_dict.pt")
    hf = net.model.config.to_dict() if hasattr(net, "model") else {}
    (out / "hf_config.json").write_text(json.dumps(hf, indent=2) + "\n")
    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    metrics = {**metrics, "model_pt_mb": file_mb(out / "model.pt")}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("exported %s: %s", out, metrics)
    return out


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


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tunes, tests on the fixed sample, and exports imdb_bert; returns the test metrics."""
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    L.seed_everything(cfg.seed, workers=True)
    d = cfg.data
    train_x, train_y, train_idx = load_imdb(d, "train", d.train_samples)
    test_x, test_y, _ = load_imdb(d, "test", d.test_samples)
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(cfg.model.net.pretrained))
    batcher = Batcher(tokenizer, d.max_length, d.head_tokens)
    train_loader = DataLoader(
        list(zip(train_x, train_y)),
        batch_size=d.batch_size,
        shuffle=True,
        collate_fn=Batcher(tokenizer, d.train_max_length or d.max_length, d.head_tokens),
    )
    val_loaders = []
    if d.val_samples:
        val_x, val_y, _ = load_imdb(d, "train", d.val_samples, exclude=train_idx)
        val_loaders = [
            DataLoader(list(zip(val_x, val_y)), batch_size=d.eval_batch_size, collate_fn=batcher)
        ]

    net = instantiate(cfg.model.net, num_classes=len(d.labels))
    module = SentimentClassifier(net, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_ratio)
    trainer = make_trainer(cfg)
    fit0 = time.perf_counter()
    trainer.fit(module, train_loader, *val_loaders)
    fit_seconds = time.perf_counter() - fit0

    net = module.net.cpu().eval()
    test = evaluate(net, test_x, test_y, batcher, d.eval_batch_size)
    if trainer.logger:
        trainer.logger.log_metrics({"test_acc": test["acc"]})
    finish_logger(trainer)
    metrics = {
        "model": cfg.name,
        "dataset": "IMDb",
        "pretrained": cfg.model.net.pretrained,
        "train_samples": len(train_x),
        "test_samples": test["n"],
        "test_acc": test["acc"],
        "max_length": d.max_length,
        "head_tokens": d.head_tokens,
        "train_max_length": d.train_max_length or d.max_length,
        "epochs": cfg.trainer.max_epochs,
        "seed": cfg.seed,
        "fit_seconds": round(fit_seconds),
        "eval_reviews_per_s": test["reviews_per_s"],
        "threads": torch.get_num_threads(),
    }
    export_traced(
        net, shape_checks(batcher, test_x), tokenizer, cfg.paths.artifacts, base_meta(cfg), metrics
    )
    metrics["model_pt_mb"] = file_mb(Path(cfg.paths.artifacts) / "model.pt")
    metrics["wall_seconds"] = round(time.perf_counter() - wall0)
    metrics["cpu_seconds"] = round(cpu_seconds() - cpu0)
    Path(cfg.paths.artifacts, "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def load_eager(art: Path) -> SequenceClassifier:
    """The fp32 model of an exported artifact, rebuilt from hf_config.json and state_dict.pt."""
    hf = json.loads((art / "hf_config.json").read_text())
    net = SequenceClassifier("", num_classes=hf.get("num_labels", 2), hf_config=hf)
    net.load_state_dict(torch.load(art / "state_dict.pt"))
    return net.eval()


def run_int8(cfg: DictConfig) -> dict[str, Any]:
    """Quantizes imdb_bert's Linear layers to int8, tests on the same sample, and exports."""
    wall0 = time.perf_counter()
    source = Path(cfg.quantize.source or Path(cfg.paths.artifacts).parent / "imdb_bert")
    if not (source / "state_dict.pt").exists():
        log.info("%s is missing: training imdb_bert first", source)
        fp32_cfg = copy.deepcopy(cfg)
        with open_dict(fp32_cfg):
            fp32_cfg.name = "imdb_bert"
            fp32_cfg.paths.artifacts = str(source)
        run(fp32_cfg)
    torch.manual_seed(cfg.seed)
    d = cfg.data
    test_x, test_y, _ = load_imdb(d, "test", d.test_samples)
    tokenizer = AutoTokenizer.from_pretrained(str(source / TOKENIZER_DIR), local_files_only=True)
    batcher = Batcher(tokenizer, d.max_length, d.head_tokens)

    fp32 = load_eager(source)
    # Per output channel, each row of a weight matrix gets its own scale: on the fixed test
    # sample that lost less accuracy than one scale per matrix (see docs/imdb_bert.md).
    qconfig = per_channel_dynamic_qconfig if cfg.quantize.per_channel else default_dynamic_qconfig
    int8 = quantize_dynamic(fp32, {nn.Linear: qconfig}, dtype=getattr(torch, cfg.quantize.dtype))
    test = evaluate(int8, test_x, test_y, batcher, d.eval_batch_size)
    fp32_metrics = json.loads((source / "metrics.json").read_text())
    metrics = {
        "model": cfg.name,
        "dataset": "IMDb",
        "source": str(source),
        "quantization": f"dynamic {cfg.quantize.dtype}, nn.Linear, "
        + ("per channel" if cfg.quantize.per_channel else "per tensor"),
        "test_samples": test["n"],
        "test_acc": test["acc"],
        "fp32_test_acc": fp32_metrics.get("test_acc"),
        "fp32_model_pt_mb": fp32_metrics.get("model_pt_mb"),
        "max_length": d.max_length,
        "seed": cfg.seed,
        "eval_reviews_per_s": test["reviews_per_s"],
        "threads": torch.get_num_threads(),
    }
    meta = {**base_meta(cfg), "quantization": metrics["quantization"]}
    # Same quantized ops in eager and traced form: the outputs agree to float rounding.
    export_traced(
        int8, shape_checks(batcher, test_x), tokenizer, cfg.paths.artifacts, meta, metrics
    )
    metrics["wall_seconds"] = round(time.perf_counter() - wall0)
    metrics["model_pt_mb"] = file_mb(Path(cfg.paths.artifacts) / "model.pt")
    Path(cfg.paths.artifacts, "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def evaluate_artifact(cfg: DictConfig) -> dict[str, Any]:
    """Accuracy of the exported model.pt exactly as served: meta.json's cleaning, its tokenizer.

    CPU only: the trace records the device of the attention bias it builds, so the module
    cannot be moved to a GPU (it fails in scaled_dot_product_attention); a GPU deployment
    exports on that GPU.
    """
    art = Path(cfg.paths.artifacts)
    meta = json.loads((art / "meta.json").read_text())
    model = torch.jit.load(str(art / "model.pt")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(art / TOKENIZER_DIR), local_files_only=True)
    d = cfg.data
    raw_x, test_y, _ = load_imdb(OmegaConf.merge(d, {"clean": []}), "test", d.test_samples)
    test_x = [clean_text(t, meta["clean"]) for t in raw_x]
    batcher = Batcher(tokenizer, meta["max_length"], meta.get("head_tokens"))
    result = evaluate(model, test_x, test_y, batcher, 64)
    return {"model": cfg.name, "artifact": str(art / "model.pt"), "test": result}


def main(argv: Sequence[str]) -> None:
    from hydra import compose, initialize_config_dir

    if not argv or argv[0] != "eval":
        sys.exit("usage: python -m train.imdb eval experiment=imdb_bert [hydra overrides]")
    configs = Path(__file__).resolve().parent.parent / "configs"
    with initialize_config_dir(str(configs), version_base="1.3"):
        cfg = compose("train", overrides=list(argv[1:]))
    result = evaluate_artifact(cfg)
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
