"""dvc.yaml, the reproducible pipeline of every served model, written from the registry.

    python -m train.pipeline             writes dvc.yaml (committed; a test keeps it current)
    python -m train.pipeline params N    writes params/N.yaml, the train stage's params file

The stages (docs/pipeline.md): `params` composes each experiment's Hydra config into
params/<name>.yaml, interpolations kept, so `dvc params diff` and dvc.lock see every value that
Hydra gives the run; `train` runs `python -m train experiment=<name>` with the code, the data and
those params as its dependencies and artifacts/<name>/ as its cached output (what the remote
store holds); `archive` packs it into model_store/<name>.mar. Each is a `foreach` over the
registry, so a model added under model_archives/ joins the pipeline when this is rerun.

DVC's own Hydra support composes one params.yaml for `dvc exp run`; nine experiments side by
side need a params file each, hence the `params` stage.
"""

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from train.core.registry import ROOT, experiment_config, spec, specs

DVC_YAML = ROOT / "dvc.yaml"
PARAMS = "params"
HEADER = """\
# The pipeline of every served model: written by `python -m train.pipeline` from the
# registry (model_archives/*/archive.yaml) and the Hydra configs; do not edit by hand.
# docs/pipeline.md: `dvc repro` rebuilds what changed, `dvc metrics show`, `dvc plots show`,
# and the remote model store that `make serve` pulls from.
"""


def shared_code() -> list[str]:
    """The files outside train/ that training runs: the handlers' request helpers (the drift
    reference's statistics) and the monitor's reference profile, as the imports find them.

    Found in a fresh interpreter, so that what this process imported already (a test session
    imports every handler) does not count.
    """
    probe = (
        "import sys, train.core.handlers, train.core.reference\n"
        "print('\\n'.join(m.__file__ for m in list(sys.modules.values())"
        " if getattr(m, '__file__', None)))"
    )
    files = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    out = set()
    for file in files:
        path = Path(file).resolve()
        for folder in ("handlers", "monitor"):
            # An empty __init__.py is no code (and DVC warns about empty dependencies).
            if path.is_relative_to(ROOT / folder) and path.stat().st_size:
                out.add(path.relative_to(ROOT).as_posix())
    return sorted(out)


def model_entry(name: str) -> dict[str, Any]:
    """One model's foreach item: its experiment, family and data, and `upstream`, the artifact
    its training starts from (`requires` in archive.yaml) or else its own experiment config.

    DVC validates `deps` as a list before it interpolates, so a per-model list cannot be
    spliced in: every model has exactly one `upstream` path instead.
    """
    model = spec(name)
    cfg = experiment_config(model.experiment)
    if len(model.requires) > 1:
        raise ValueError(f"{name}: the pipeline takes one required artifact, not {model.requires}")
    upstream = f"artifacts/{model.requires[0]}" if model.requires else None
    return {
        "experiment": model.experiment,
        "family": cfg.runner.split(".")[1],  # train.<family>.<module>.<function>
        "data": str(cfg.data.name),
        "upstream": upstream or f"configs/experiment/{model.experiment}.yaml",
    }


def prepare_stage() -> dict[str, Any]:
    """`make data` as a stage: every served model's dataset under data/, from the mirror or the
    internet. Its folders are outputs that are not cached (links into the mirror, or downloads
    that anyone can fetch again) and persist across reruns."""
    cfgs = {str(c.name): c for c in (experiment_config(s.experiment).data for s in specs())}
    code = {"train/core/prepare.py", "train/core/mirror.py"}
    code |= {c.prepare.rsplit(".", 1)[0].replace(".", "/") + ".py" for c in cfgs.values()}
    return {
        "cmd": "python -m train.core.prepare",
        "deps": [*sorted(code), "configs/data"],
        "outs": [{f"data/{name}": {"cache": False, "persist": True}} for name in sorted(cfgs)],
    }


def pipeline() -> dict[str, Any]:
    """dvc.yaml as a dict."""
    models = {s.name: model_entry(s.name) for s in specs()}
    names = list(models)
    return {
        "stages": {
            "prepare": prepare_stage(),
            PARAMS: {
                "foreach": names,
                "do": {
                    "cmd": "python -m train.pipeline params ${item}",
                    "deps": ["configs", "train/pipeline.py"],
                    "outs": [{f"{PARAMS}/${{item}}.yaml": {"cache": False}}],
                },
            },
            "train": {
                "foreach": models,
                "do": {
                    "cmd": "python -m train experiment=${item.experiment}",
                    "params": [{f"{PARAMS}/${{key}}.yaml": None}],
                    "deps": [
                        "train/__main__.py",
                        "train/core",
                        "train/${item.family}",
                        *shared_code(),
                        "data/${item.data}",
                        "${item.upstream}",
                    ],
                    "outs": ["artifacts/${key}"],
                },
            },
            "archive": {
                "foreach": names,
                "do": {
                    "cmd": "python -m serve build ${item}",
                    "deps": [
                        "artifacts/${item}",
                        "model_archives/${item}",
                        "handlers",
                        "serve/archive.py",
                    ],
                    "outs": [{"model_store/${item}.mar": {"cache": False}}],
                },
            },
        },
        # Each metrics.json lies inside its cached artifact folder: listed here, not as outputs.
        "metrics": [f"artifacts/{n}/metrics.json" for n in names],
        "plots": [{f"artifacts/{n}/curves.csv": {"x": "epoch"}} for n in names],
    }


def write_params(name: str, out: Path = ROOT / PARAMS) -> Path:
    """params/<name>.yaml: the experiment's composed config, interpolations unresolved (they
    name environment variables such as DATA_MIRROR, whose values differ between machines)."""
    cfg = experiment_config(spec(name).experiment)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.yaml"
    path.write_text(OmegaConf.to_yaml(cfg, resolve=False))
    return path


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    """dvc.yaml's text: the header, then the stages without YAML anchors."""
    return HEADER + yaml.dump(pipeline(), Dumper=_NoAliases, sort_keys=False, width=100)


def main(argv: list[str]) -> None:
    if argv[:1] == ["params"] and len(argv) == 2:
        print(write_params(argv[1]))
    elif not argv:
        DVC_YAML.write_text(render())
        print(DVC_YAML)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
