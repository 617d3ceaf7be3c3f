"""The forms that `make bench-compile` (benchmarks/compile.py) compares, built from one model's
trained weights: its eager module rebuilt from the artifact's state_dict.pt, the served
TorchScript, torch.compile, int8 dynamic quantization and torch.export + AOTInductor; and the
check that a form answers as TorchScript does."""

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.utils import instantiate
from torch import nn

from serve.config import ROOT
from train.core.registry import experiment_config, spec

ARTIFACTS = ROOT / "artifacts"


def _graph(art: Path, meta: dict[str, Any], cfg: Any) -> nn.Module:
    labels = len(meta["labels"])
    return instantiate(meta["model_cfg"], in_dim=meta["feature_dim"], num_classes=labels)


def _energy(art: Path, meta: dict[str, Any], cfg: Any) -> nn.Module:
    from train.qm9.model import EnergyModel

    max_z = int(cfg.model.net.max_z)
    return EnergyModel(instantiate(cfg.model.net), torch.zeros(max_z, dtype=torch.float64))


def _image(art: Path, meta: dict[str, Any], cfg: Any) -> nn.Module:
    from train.flowers.models import ImageClassifier

    net = instantiate(meta["model_cfg"], in_dim=3, num_classes=len(meta["labels"]))
    m = cfg.model
    return ImageClassifier(
        net, meta["input_size"], list(m.mean), list(m.std), m.get("flip_tta", False)
    )


def _text(art: Path, meta: dict[str, Any], cfg: Any) -> nn.Module:
    from train.imdb.model import load_eager

    return load_eager(art)  # its hf_config.json and state_dict.pt


# meta.json's task -> the eager module of the export (its weights are loaded after).
# imdb_bert_int8 is itself imdb_bert's int8 form (meta "quantization"): it has no row of its own.
EAGER: dict[str, Callable[[Path, dict[str, Any], Any], nn.Module]] = {
    "node_classification": _graph,
    "graph_classification": _graph,
    "molecular_energy": _energy,
    "image_classification": _image,
    "text_classification": _text,
}


def rebuildable(name: str) -> bool:
    meta = json.loads((ARTIFACTS / name / "meta.json").read_text())
    return meta["task"] in EAGER and not meta.get("quantization")


def eager_model(name: str) -> nn.Module:
    """The export's eager module with the artifact's weights (state_dict.pt)."""
    art = ARTIFACTS / name
    meta = json.loads((art / "meta.json").read_text())
    net = EAGER[meta["task"]](art, meta, experiment_config(spec(name).experiment))
    net.load_state_dict(torch.load(art / "state_dict.pt", weights_only=True))
    return net.eval()


def linear_share(net: nn.Module, inputs: tuple[Any, ...]) -> float:
    """The share of eager self CPU time spent in the ops nn.Linear runs (addmm, mm, linear)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        net(*inputs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                net(*inputs)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    lin = sum(e.self_cpu_time_total for e in events if e.key in ("aten::addmm", "aten::mm"))
    return round(lin / total, 3) if total else 0.0


def _dims(x: Any) -> Any:
    """Every tensor dimension left to torch.export to decide (Dim.AUTO), through lists too."""
    if isinstance(x, torch.Tensor):
        return {d: torch.export.Dim.AUTO for d in range(x.dim())}
    if isinstance(x, list):
        return [_dims(t) for t in x]
    return None


def _package(net: nn.Module, inputs: tuple[Any, ...], path: Path) -> Callable[..., Any]:
    program = torch.export.export(net, inputs, dynamic_shapes=tuple(_dims(x) for x in inputs))
    package = torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return torch._inductor.aoti_load_package(package)


def aoti(net: nn.Module, inputs: tuple[Any, ...], workdir: Path) -> Callable[..., Any]:
    """torch.export with every tensor dimension dynamic, then an AOTInductor package, loaded back.

    An exported program fixes the length of a list input (the image models take a list of
    photos), so such a model gets one package per list length, built on its first call (the
    timing's warm-up) and each recorded in `aoti_packages`; a server would need one per batch
    size it runs.
    """
    if not any(isinstance(x, list) for x in inputs):
        return _package(net, inputs, workdir / "model.pt2")
    by_length: dict[tuple[int, ...], Callable[..., Any]] = {}

    def run(*args: Any) -> Any:
        key = tuple(len(x) for x in args if isinstance(x, list))
        if key not in by_length:
            tag = "-".join(map(str, key))
            by_length[key] = _package(net, args, workdir / f"model-{tag}.pt2")
        return by_length[key](*args)

    run.packages = by_length  # type: ignore[attr-defined]
    run(*inputs)
    return run


def build(form: str, name: str, workdir: Path, inputs: tuple[Any, ...]) -> tuple[Any, dict]:
    """The form's callable and what building it took."""
    began = time.perf_counter()
    extra: dict[str, Any] = {}
    if form == "torchscript":
        model: Any = torch.jit.load(str(ARTIFACTS / name / "model.pt")).eval()
    else:
        net = eager_model(name)
        if form == "eager":
            model = net
        elif form == "compile":
            model = torch.compile(net, backend="inductor", dynamic=True)
            with torch.inference_mode():
                model(*inputs)  # compiles
        elif form == "int8":
            from torch.ao.quantization import quantize_dynamic

            extra["linear_share_eager"] = linear_share(net, inputs)
            model = quantize_dynamic(copy.deepcopy(net), {nn.Linear}, dtype=torch.qint8)
        elif form == "aoti":
            model = aoti(net, inputs, workdir)
        else:
            raise ValueError(form)
    extra["build_s"] = round(time.perf_counter() - began, 2)
    return model, extra


def max_abs_diff(got: Any, expected: Any) -> Optional[float]:
    """The largest absolute difference over the outputs' tensors; None when the shapes differ."""
    from torch.utils._pytree import tree_leaves

    a = [t for t in tree_leaves(got) if isinstance(t, torch.Tensor)]
    b = [t for t in tree_leaves(expected) if isinstance(t, torch.Tensor)]
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return None
    return max((float((x.float() - y.float()).abs().max()) for x, y in zip(a, b)), default=0.0)
