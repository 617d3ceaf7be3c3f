"""The data mirror: DATA_MIRROR holds every dataset's raw files; loaders link them, never copy."""

import logging
import os
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)


def mirror_dir(mirror: Optional[str] = None) -> Optional[Path]:
    """Returns the mirror directory from the argument or DATA_MIRROR, if it exists."""
    value = mirror or os.environ.get("DATA_MIRROR")
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"DATA_MIRROR={value} is not a directory")
    return path


def link_from_mirror(relative: str, root: str | Path, mirror: Optional[str] = None) -> bool:
    """Symlinks each file of <mirror>/<relative> into <root>/<relative>; never writes the mirror.

    Returns True when the mirror held that folder, so the caller's loader finds its raw files
    and does not download.
    """
    src_root = mirror_dir(mirror)
    if src_root is None or not (src_root / relative).exists():
        return False
    src = src_root / relative
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for f in files:
        dst = Path(root) / relative / f.relative_to(src) if src.is_dir() else Path(root) / relative
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(f)
    log.info("linked %d file(s) of %s from mirror %s", len(files), relative, src_root)
    return True
