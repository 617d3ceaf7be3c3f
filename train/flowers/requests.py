"""Flower photos as requests: the `example` and `pool` hooks of flowers_vit and flowers_cnn."""

import base64
import random
from typing import Any

from train.core.pools import Payload, json_payload
from train.flowers.data import ImageSet, image_folder, list_images


def flowers_example(data_cfg: Any) -> tuple[str, str, bytes]:
    """`example` hook for flowers_vit/flowers_cnn: the first test photo's JPEG bytes."""
    data = ImageSet(data_cfg, seed=42)  # configs/train.yaml's seed: the split training used
    return ".jpg", "image/jpeg", data.paths[data.split["test"][0]].read_bytes()


def flowers_pool(data_cfg: Any, size: int, rng: random.Random) -> list[Payload]:
    """Random flower photos of every class, at their own sizes: most as raw JPEG bytes, some
    as JSON {"b64": ...}, which is also the Vertex instance of each."""
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
