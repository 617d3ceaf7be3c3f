"""Reads what the workers appended to one model's payload log since the last read.

The files are <dir>/<model>/<pid>.jsonl and their rotations <pid>.jsonl.1, ... (handlers/
payload_log.py). A file is followed by its inode, so a rotation (a rename) loses nothing: the
rest of the renamed file is read, then the new file from its start. Only whole lines are read;
a line a worker is still writing waits for the next read.
"""

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Tail:
    """New records of the payload files in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.offsets: dict[int, int] = {}  # inode -> bytes read
        self.malformed = 0

    def read(self) -> list[dict[str, Any]]:
        """Records appended since the last call, oldest first."""
        records: list[dict[str, Any]] = []
        seen: set[int] = set()
        for path in sorted(self.folder.glob("*.jsonl*")):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # rotated away or removed between glob and stat
            seen.add(st.st_ino)
            start = self.offsets.get(st.st_ino, 0)
            if st.st_size < start:
                start = 0  # truncated: a new file on a reused inode
            if st.st_size == start:
                self.offsets[st.st_ino] = start
                continue
            with open(path, "rb") as f:
                f.seek(start)
                chunk = f.read(st.st_size - start)
            end = chunk.rfind(b"\n") + 1
            self.offsets[st.st_ino] = start + end
            for line in chunk[:end].splitlines():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    self.malformed += 1
        self.offsets = {ino: off for ino, off in self.offsets.items() if ino in seen}
        records.sort(key=lambda r: r.get("time", 0.0) if isinstance(r, dict) else 0.0)
        return [r for r in records if isinstance(r, dict)]
