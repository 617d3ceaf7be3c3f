"""The lineage record: which DVC data version trained which model version, with its metrics.

One JSON object per line in <workdir>/lineage.jsonl (append-only); <workdir>/events.jsonl logs
every decision (trigger, gate, swap) with a timestamp.
"""

import json
import time
from pathlib import Path
from typing import Any, Optional

# What a complete model record holds (tests check every one is present and not null).
RECORD_KEYS = (
    "model_version",
    "served_as",
    "data_version",
    "data_md5",
    "dvc_remote",
    "n_train",
    "n_val",
    "n_test",
    "shards",
    "parent_version",
    "metrics",
    "trigger",
    "gate",
    "promoted",
    "artifacts",
    "mar",
    "started",
    "finished",
)


# events.jsonl's entry of a served version scored on an arrived shard (online/assess.py).
ASSESS_EVENT = "assess"


def version_name(n: int) -> str:
    """The TorchServe version string of online model version n."""
    return f"online-{n}"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of an append-only .jsonl file; [] before its first line."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_jsonl(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


class Lineage:
    """Append-only model records and decision events of one online workspace."""

    def __init__(self, workdir: str | Path) -> None:
        self.workdir = Path(workdir)
        self.path = self.workdir / "lineage.jsonl"
        self.events = self.workdir / "events.jsonl"

    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)

    def append(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, record)

    def served(self) -> Optional[dict[str, Any]]:
        """The latest promoted model record (what clients get), or None."""
        promoted = [r for r in self.records() if r.get("promoted")]
        return promoted[-1] if promoted else None

    def next_version(self) -> int:
        return 1 + max((r["model_version"] for r in self.records()), default=0)

    def log(self, event: str, **fields: Any) -> dict[str, Any]:
        """Appends a decision or action to events.jsonl and returns it."""
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **fields}
        append_jsonl(self.events, entry)
        return entry

    def read_events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.events)
