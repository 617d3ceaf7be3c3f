"""Real example requests built from the data directory (never committed; `make examples`).

Each served model's archive.yaml names its `example` hook, `hook(data_cfg) -> (suffix, content
type, body bytes)`, which lives in its family's requests.py. Usage:
python -m train.core.examples [--out examples]
"""

import argparse
import json
from pathlib import Path

from hydra.utils import get_method

from train.core.registry import ROOT, experiment_config, specs


def write_examples(out: Path) -> dict[str, dict[str, str]]:
    """Writes one real request per served model to out/<name><suffix> and out/index.json."""
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    for spec in specs():
        if spec.example is None:
            raise KeyError(f"{spec.name} has no `example` hook in {spec.folder}/archive.yaml")
        data_cfg = experiment_config(spec.experiment).data
        suffix, content_type, body = get_method(spec.example)(data_cfg)
        (out / f"{spec.name}{suffix}").write_bytes(body)
        index[spec.name] = {"file": f"{spec.name}{suffix}", "content_type": content_type}
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "examples")
    args = parser.parse_args()
    for name, entry in write_examples(args.out).items():
        print(f"{name}: {args.out / entry['file']} ({entry['content_type']})")


if __name__ == "__main__":
    main()
