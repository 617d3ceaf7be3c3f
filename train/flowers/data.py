"""Folder-per-class photos: decoding, a fixed stratified split, and the mirror/download hook.

Photos are decoded by the handler's own `decode_image` (handlers/image_request.py: pixel guard
before decoding, JPEG draft, EXIF rotation, colour modes to RGB), so training and serving see
identical tensors.
"""

import logging
import tarfile
import urllib.request
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from train.core.handlers import decode_image
from train.core.mirror import link_from_mirror

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}


def list_images(folder: str | Path, labels: Optional[list[str]] = None) -> tuple[list, list[str]]:
    """[(path, class index)] of a folder-per-class directory, and the class names (sorted).

    When `labels` is given, the folder's classes must be exactly those names.
    """
    folder = Path(folder)
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{folder} has no class folders")
    if labels is not None and sorted(labels) != classes:
        raise ValueError(f"{folder} has classes {classes}, the config expects {sorted(labels)}")
    items = [
        (p, i)
        for i, c in enumerate(classes)
        for p in sorted((folder / c).iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return items, classes


def stratified_split(
    targets: list[int], fractions: dict[str, float], seed: int, max_per_class: Optional[int] = None
) -> dict[str, list[int]]:
    """Index lists per split with every class split in the same proportions; fixed by seed.

    The last split takes each class's remainder, so no image is dropped by rounding.
    """
    gen = torch.Generator().manual_seed(seed)
    names = list(fractions)
    out: dict[str, list[int]] = {n: [] for n in names}
    y = torch.tensor(targets)
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().view(-1)
        idx = idx[torch.randperm(len(idx), generator=gen)].tolist()
        if max_per_class:
            idx = idx[:max_per_class]
        start = 0
        for j, n in enumerate(names):
            end = len(idx) if j == len(names) - 1 else start + round(fractions[n] * len(idx))
            out[n].extend(idx[start:end])
            start = end
    return {n: sorted(v) for n, v in out.items()}


def image_folder(data_cfg: Any) -> Path:
    """The folder-per-class directory: `path` if set, else <root>/<name> (mirror or download)."""
    if data_cfg.get("path"):
        return Path(data_cfg.path)
    folder = Path(data_cfg.root) / data_cfg.name
    if link_from_mirror(data_cfg.name, data_cfg.root, data_cfg.mirror):
        # The per-photo CC-BY attribution list sits beside the class folders.
        link_from_mirror(f"{data_cfg.name}_LICENSE.txt", data_cfg.root, data_cfg.mirror)
        return folder
    if not any(folder.glob("*/*")):
        download_flower_photos(data_cfg.url, Path(data_cfg.root), folder)
    return folder


def download_flower_photos(url: str, root: Path, folder: Path) -> None:
    """Downloads TensorFlow's flower_photos.tgz and unpacks its class folders into `folder`."""
    archive = root / Path(url).name
    if not archive.exists():
        log.info("downloading %s", url)
        root.mkdir(parents=True, exist_ok=True)
        urllib.request.urlretrieve(url, archive)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts  # flower_photos/<class>/<file>
            if ".." in parts:
                continue
            if member.isfile() and len(parts) == 3 and Path(parts[2]).suffix in IMAGE_SUFFIXES:
                target = folder / parts[1] / parts[2]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
            elif member.isfile() and parts[-1] == "LICENSE.txt":
                (root / f"{folder.name}_LICENSE.txt").write_bytes(tar.extractfile(member).read())


class ImageSet:
    """Decoded photos of one folder with the fixed split: uint8 (3, H, W) tensors and labels."""

    def __init__(self, data_cfg: Any, seed: int) -> None:
        labels = list(data_cfg.labels) if data_cfg.get("labels") else None
        self.folder = image_folder(data_cfg)
        items, self.classes = list_images(self.folder, labels)
        self.paths = [p for p, _ in items]
        self.targets = [t for _, t in items]
        self.split = stratified_split(
            self.targets,
            dict(data_cfg.split),
            seed,
            data_cfg.get("max_per_class"),
        )
        self.max_pixels, self.draft = data_cfg.decode.max_pixels, data_cfg.decode.draft
        self.workers = int(data_cfg.get("workers") or 0)
        self._cache: dict[int, Tensor] = {}

    def image(self, i: int) -> Tensor:
        """The i-th photo as the handler would decode its bytes."""
        if i not in self._cache:
            self._cache[i] = decode_image(self.paths[i].read_bytes(), self.max_pixels, self.draft)
        return self._cache[i]

    def subset(self, name: str) -> tuple[list[Tensor], Tensor]:
        """The images and labels of one split, decoded by `workers` DataLoader processes."""
        idx = self.split[name]
        todo = [i for i in idx if i not in self._cache]
        if todo and self.workers:
            decoded = DataLoader(
                _Decode([self.paths[i] for i in todo], self.max_pixels, self.draft),
                batch_size=32,
                num_workers=self.workers,
                collate_fn=list,
            )
            self._cache.update(zip(todo, (im for batch in decoded for im in batch)))
        return [self.image(i) for i in idx], torch.tensor([self.targets[i] for i in idx])


class _Decode(Dataset):
    """Photo files decoded as the handler decodes them: what DataLoader workers run."""

    def __init__(self, paths: list[Path], max_pixels: int, draft: int) -> None:
        self.paths, self.max_pixels, self.draft = paths, max_pixels, draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return decode_image(self.paths[i].read_bytes(), self.max_pixels, self.draft)


def prepare_flowers(data_cfg: Any) -> str:
    """`prepare` hook of configs/data/flowers.yaml: links or downloads, then counts."""
    items, classes = list_images(
        image_folder(data_cfg), list(data_cfg.labels) if data_cfg.get("labels") else None
    )
    return f"{data_cfg.name}: {len(items)} images in {len(classes)} classes ({', '.join(classes)})"
