"""Varied real request pools for the load tests, written from the data directory at run time.

`loadtests/` is a black box that only reads these files: one request body per file under
`<out>/<model>/`, and `<out>/index.json` listing, per model, each body's file and Content-Type
and, for bodies that are not JSON, the file holding the same request as a Vertex AI instance
(JSON bodies are their own instance). Nothing here is committed: `loadtests/pool/` is ignored.

Each served model's archive.yaml names its `pool` hook, `hook(data_cfg, size, rng) ->
list[Payload]`, which lives in its family's requests.py; models of one task share one.
Usage: python -m train.core.pools [--out DIR] [--models a b] [--size N]
"""

import argparse
import json
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.utils import get_method

from train.core.registry import ROOT, experiment_config, served_models, spec

OUT = ROOT / "loadtests" / "pool"
JSON = "application/json"

log = logging.getLogger(__name__)


@dataclass
class Payload:
    """One request body; `instance` is its Vertex AI instance (JSON) when the body is not JSON."""

    suffix: str
    content_type: str
    body: bytes
    instance: Optional[bytes] = None


def json_payload(request: dict[str, Any]) -> Payload:
    """A compact JSON body, its own Vertex instance."""
    return Payload(".json", JSON, json.dumps(request, separators=(",", ":")).encode())


def pool_hooks() -> dict[str, str]:
    """Served model name -> its `pool` hook, for every served model that names one."""
    return {name: s.pool for name in served_models() if (s := spec(name)).pool}


def write_pools(out: Path, models: list[str], size: int, seed: int) -> dict[str, Any]:
    """Writes each model's pool under out/<model>/ and out/index.json; returns the index."""
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    hooks = pool_hooks()
    for name in models:
        if name not in hooks:
            raise KeyError(f"no payload pool for {name}: name a `pool` hook in its archive.yaml")
        data_cfg = experiment_config(spec(name).experiment).data
        # One seed per model, so adding a model never changes another model's pool.
        pool = get_method(hooks[name])(data_cfg, size, random.Random(f"{seed}:{name}"))
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        entries = []
        for i, p in enumerate(pool):
            entry = {"file": f"{name}/{i:04d}{p.suffix}", "content_type": p.content_type}
            (out / entry["file"]).write_bytes(p.body)
            if p.instance is not None:
                entry["instance"] = f"{name}/{i:04d}.instance.json"
                (out / entry["instance"]).write_bytes(p.instance)
            entries.append(entry)
        index[name] = {"payloads": entries, "bytes": sum(len(p.body) for p in pool)}
        log.info("%s: %d payloads, %d bytes", name, len(pool), index[name]["bytes"])
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    return index


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--models", nargs="*", help="default: every served model with a pool")
    parser.add_argument("--size", type=int, default=200, help="requests per model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    hooks = pool_hooks()
    models = args.models or sorted(hooks)
    for name in sorted(set(served_models()) - set(hooks)):
        print(f"warning: {name} is served but names no `pool` hook in its archive.yaml")
    index = write_pools(args.out, models, args.size, args.seed)
    for name in models:
        entry = index[name]
        print(f"{name}: {len(entry['payloads'])} requests, {entry['bytes']} bytes in {args.out}")


if __name__ == "__main__":
    main()
