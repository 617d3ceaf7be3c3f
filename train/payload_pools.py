"""Varied real request pools for the load tests, written from the data directory at run time.

`loadtests/` is a black box that only reads these files: one request body per file under
`<out>/<model>/`, and `<out>/index.json` listing, per model, each body's file and Content-Type
and, for bodies that are not JSON, the file holding the same request as a Vertex AI instance
(JSON bodies are their own instance). Nothing here is committed: `loadtests/pool/` is ignored.

Adding a model is one function `pool(data_cfg, size, rng) -> list[Payload]` (or an existing one)
and one line in POOLS. Usage: python -m train.payload_pools [--out DIR] [--models a b] [--size N]
"""

import argparse
import base64
import json
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra import compose, initialize_config_dir

from train.data import load_planetoid, load_tu
from train.examples import cora_request, mutag_request

ROOT = Path(__file__).resolve().parent.parent
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
    return Payload(".json", JSON, json.dumps(request, separators=(",", ":")).encode())


def cora_pool(data_cfg: Any, size: int, rng: random.Random) -> list[Payload]:
    """Neighbourhoods of random Cora nodes: 1 hop (a few nodes) to 2 hops (up to ~800 nodes).

    Most use the sparse feature form; small 1-hop ones sometimes send dense rows, and some ask
    for every node of the subgraph instead of only the centre.
    """
    cora = load_planetoid(data_cfg.name, data_cfg.root, data_cfg.mirror, normalize=False)[0]
    pool = []
    for _ in range(size):
        center = rng.randrange(cora.num_nodes)
        hops = 1 if rng.random() < 0.4 else 2
        request = cora_request(cora, center, hops=hops, sparse=True)
        if hops == 1 and len(request["x_sparse"]) <= 8 and rng.random() < 0.3:
            request = cora_request(cora, center, hops=1, sparse=False)
        if rng.random() < 0.2:
            del request["nodes"]  # all nodes of the subgraph
        pool.append(json_payload(request))
    return pool


def mutag_pool(data_cfg: Any, size: int, rng: random.Random) -> list[Payload]:
    """MUTAG molecules (all 188 when size allows), mostly as atom symbols, some as one-hot rows."""
    mutag = load_tu(data_cfg.name, data_cfg.root, data_cfg.mirror)
    order = list(range(len(mutag)))
    rng.shuffle(order)
    picks = [order[i % len(order)] for i in range(size)]
    return [json_payload(mutag_request(mutag[i], as_atoms=rng.random() < 0.8)) for i in picks]


def qm9_pool(data_cfg: Any, size: int, rng: random.Random) -> list[Payload]:
    """Random QM9 molecules (3 to 29 atoms): JSON with atom symbols or atomic numbers, some as
    .xyz text (their Vertex instance is the JSON form), a few asking for forces too."""
    from train.qm9_data import load_qm9, to_request, to_xyz

    molecules = load_qm9(data_cfg)
    pool = []
    for i in rng.sample(range(len(molecules)), min(size, len(molecules))):
        m, roll = molecules[i], rng.random()
        if roll < 0.8:
            forces = rng.random() < 0.1
            pool.append(json_payload(to_request(m, as_atoms=roll < 0.6, forces=forces)))
        else:
            body = to_xyz(m, comment=f"gdb {int(m.idx)}").encode()
            pool.append(Payload(".xyz", "chemical/x-xyz", body, json_payload(to_request(m)).body))
    return pool


def imdb_pool(data_cfg: Any, size: int, rng: random.Random) -> list[Payload]:
    """Random raw IMDb test reviews (a few words to ~2,500, `<br />` tags and all): most as
    text/plain, some as JSON {"text": ...}; the JSON form is the Vertex instance of both."""
    from train.text_data import imdb_dir, read_split

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


def flowers_pool(data_cfg: Any, size: int, rng: random.Random) -> list[Payload]:
    """Random flower photos of every class, at their own sizes: most as raw JPEG bytes, some
    as JSON {"b64": ...}, which is also the Vertex instance of each."""
    from train.image_data import image_folder, list_images

    labels = list(data_cfg.labels) if data_cfg.get("labels") else None
    items, _ = list_images(image_folder(data_cfg), labels)
    pool = []
    for i in rng.sample(range(len(items)), min(size, len(items))):
        path = items[i][0]
        photo = path.read_bytes()
        instance = json_payload({"b64": base64.b64encode(photo).decode()})
        if rng.random() < 0.8:
            ctype = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
            pool.append(Payload(path.suffix.lower(), ctype, photo, instance.body))
        else:
            pool.append(instance)
    return pool


# Served model name -> pool function. Models of the same task share one.
POOLS: dict[str, Callable[[Any, int, random.Random], list[Payload]]] = {
    "cora_gcn": cora_pool,
    "cora_gat": cora_pool,
    "mutag_gcn": mutag_pool,
    "qm9_et": qm9_pool,
    "imdb_bert": imdb_pool,
    "imdb_bert_int8": imdb_pool,
    "flowers_vit": flowers_pool,
    "flowers_cnn": flowers_pool,
}


def served_models() -> list[str]:
    """Every folder under model_archives/ (the served models)."""
    return sorted(p.parent.name for p in (ROOT / "model_archives").glob("*/archive.yaml"))


def write_pools(out: Path, models: list[str], size: int, seed: int) -> dict[str, Any]:
    """Writes each model's pool under out/<model>/ and out/index.json; returns the index."""
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        for name in models:
            if name not in POOLS:
                raise KeyError(f"no payload pool for {name}: add one to POOLS in {__file__}")
            spec = yaml.safe_load((ROOT / "model_archives" / name / "archive.yaml").read_text())
            data_cfg = compose("train", overrides=[f"experiment={spec['experiment']}"]).data
            # One seed per model, so adding a model never changes another model's pool.
            pool = POOLS[name](data_cfg, size, random.Random(f"{seed}:{name}"))
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
    models = args.models or [m for m in served_models() if m in POOLS]
    for name in sorted(set(served_models()) - set(POOLS)):
        print(f"warning: {name} is served but has no payload pool (see POOLS)")
    index = write_pools(args.out, models, args.size, args.seed)
    for name in models:
        entry = index[name]
        print(f"{name}: {len(entry['payloads'])} requests, {entry['bytes']} bytes in {args.out}")


if __name__ == "__main__":
    main()
