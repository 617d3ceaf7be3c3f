"""Training decodes each photo with the handler's decoder: the tensors it learns from are served."""

import pytest
import torch
from image_request import decode_image
from PIL import Image

from tests.conftest import ROOT, mirror
from train.core.registry import experiment_config
from train.flowers.data import ImageSet


@pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")
def test_training_photos_are_the_handlers_decoding_of_their_bytes():
    data_cfg = experiment_config("flowers_cnn", f"paths.data={ROOT / 'data'}").data
    photos = ImageSet(data_cfg, seed=42)
    draft = data_cfg.decode.draft
    for i in photos.split["test"][:12]:
        served = decode_image(photos.paths[i].read_bytes(), 24_000_000, draft, ["JPEG", "PNG"])
        trained = photos.image(i)
        assert trained.dtype == torch.uint8 and trained.shape[0] == 3
        assert torch.equal(trained, served)
        # The JPEG draft may reduce the decode, never below `draft` on the short side.
        with Image.open(photos.paths[i]) as im:
            short = min(im.size)
        assert min(draft, short) <= min(trained.shape[1:]) <= short


@pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")
def test_decoding_in_dataloader_workers_gives_the_same_photos_in_the_same_order():
    overrides = [f"paths.data={ROOT / 'data'}", "data.max_per_class=6"]
    in_process = ImageSet(experiment_config("flowers_cnn", *overrides).data, seed=42)
    workers = ImageSet(experiment_config("flowers_cnn", *overrides, "data.workers=2").data, 42)
    assert workers.workers == 2 and in_process.workers == 0
    for part in ("train", "val", "test"):
        (a, ya), (b, yb) = in_process.subset(part), workers.subset(part)
        assert torch.equal(ya, yb) and len(a) == len(b) > 0
        assert all(torch.equal(x, y) for x, y in zip(a, b))
