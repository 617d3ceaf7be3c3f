"""IMDb reviews (Maas et al. 2011): mirror or download, fixed samples, the handler's cleaning.

Both splits are CSV files `imdb/{train,test}.csv` with columns `text,label` (0 = negative,
1 = positive), as in DATA_MIRROR; without a mirror they are written from the Stanford archive.
Standard library and the handler's text helpers only, so the CLI and tests import it cheaply.
"""

import csv
import io
import logging
import random
import tarfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from train.core.handlers import clean_text
from train.core.mirror import link_from_mirror

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


def read_split(path: str | Path) -> tuple[list[str], list[int]]:
    """Reads one `text,label` CSV into raw texts and integer labels."""
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            texts.append(row["text"])
            labels.append(int(row["label"]))
    return texts, labels


def imdb_dir(root: str | Path, mirror: Optional[str] = None, url: Optional[str] = None) -> Path:
    """Returns <root>/imdb holding train.csv and test.csv: linked from the mirror, else fetched."""
    out = Path(root) / "imdb"
    if all((out / f"{s}.csv").exists() for s in SPLITS):
        return out
    if link_from_mirror("imdb", root, mirror):
        return out
    if not url:
        raise FileNotFoundError(f"{out} has no train.csv/test.csv, no mirror and no url")
    download_imdb(url, out)
    return out


def download_imdb(url: str, out: Path) -> None:
    """Fetches the aclImdb_v1 archive and writes it as the mirror's CSV layout.

    Rows keep the archive's review text verbatim (`<br />` included) with label 0 for neg/ and
    1 for pos/, in file-name order shuffled with random.Random(0), like the mirror's files.
    """
    log.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=600) as resp:
        blob = resp.read()
    rows: dict[str, list[tuple[str, str, int]]] = {s: [] for s in SPLITS}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")  # aclImdb/<split>/<neg|pos>/<id>_<rating>.txt
            if len(parts) != 4 or parts[1] not in SPLITS or parts[2] not in ("neg", "pos"):
                continue
            f = tar.extractfile(member)
            if f is None:
                continue
            text = f.read().decode("utf-8")
            rows[parts[1]].append((member.name, text, int(parts[2] == "pos")))
    out.mkdir(parents=True, exist_ok=True)
    for split, items in rows.items():
        items.sort()
        random.Random(0).shuffle(items)
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows((text, label) for _, text, label in items)


def balanced_sample(
    labels: Sequence[int], n: Optional[int], seed: int, exclude: Sequence[int] = ()
) -> list[int]:
    """Indices of a fixed sample with the classes equally represented; None or 0 means all.

    Deterministic in (labels, n, seed, exclude), so every run and every model sees the same
    reviews; `exclude` keeps a validation sample disjoint from the training sample.
    """
    skip = set(exclude)
    order = [i for i in range(len(labels)) if i not in skip]
    random.Random(seed).shuffle(order)
    if not n or n >= len(order):
        return order
    classes = sorted(set(labels))
    quota = {c: n // len(classes) + (i < n % len(classes)) for i, c in enumerate(classes)}
    picked = []
    for i in order:
        if quota[labels[i]] > 0:
            quota[labels[i]] -= 1
            picked.append(i)
    return picked


def load_imdb(
    data_cfg: Any, split: str, n: Optional[int], exclude: Sequence[int] = ()
) -> tuple[list[str], list[int], list[int]]:
    """Cleaned texts, labels and row indices of the fixed balanced sample of `split`."""
    path = imdb_dir(data_cfg.root, data_cfg.mirror, data_cfg.get("url")) / f"{split}.csv"
    texts, labels = read_split(path)
    idx = balanced_sample(labels, n, data_cfg.sample_seed, exclude)
    rules = data_cfg.clean
    return [clean_text(texts[i], rules) for i in idx], [labels[i] for i in idx], idx


def prepare_imdb(data_cfg: Any) -> str:
    """`prepare` hook of configs/data/imdb.yaml: links or downloads, then summarises."""
    root = imdb_dir(data_cfg.root, data_cfg.mirror, data_cfg.get("url"))
    counts = {s: len(read_split(root / f"{s}.csv")[1]) for s in SPLITS}
    return f"IMDb: {counts['train']} train and {counts['test']} test reviews in {root}"
