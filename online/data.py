"""The loop's data: QM9 cut into shards that arrive one at a time, each data state a DVC version.

Layout of the workspace (its own DVC repository, without git):
    incoming/shard_NNN.csv   shards not yet available (the future; not versioned)
    data/                    what training may use, tracked as one DVC directory (data.dvc):
      train/shard_NNN.csv      arrived shards
      val.csv, test.csv        fixed held-out sets, available from the start
    versions/data-vK.yaml    the data.dvc of version K (not *.dvc: DVC would track it): `restore K`
    data_versions.jsonl      K, DVC md5, molecules and shards of every data version
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig
from torch_geometric.data import Data

from online.lineage import append_jsonl, read_jsonl
from train.qm9.data import write_qm9pack_csv


class DvcWorkspace:
    """One online workspace: shards, the DVC-tracked data folder and its versions."""

    def __init__(self, online: DictConfig) -> None:
        self.cfg = online
        self.root = Path(online.workdir).resolve()
        self.data = self.root / "data"
        self.incoming = self.root / "incoming"
        self.versions_file = self.root / "data_versions.jsonl"

    def dvc(self, *args: str) -> str:
        """Runs the dvc CLI in the workspace; raises with dvc's own message on failure."""
        exe = Path(sys.executable).parent / "dvc"
        env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
        proc = subprocess.run(
            [str(exe) if exe.exists() else "dvc", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dvc {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def exists(self) -> bool:
        return (self.root / ".dvc").is_dir()

    def init(self, train: list[Data], val: list[Data], test: list[Data]) -> dict[str, Any]:
        """Creates the DVC repo and remote, cuts `train` into shards, makes the first available."""
        if self.exists():
            raise FileExistsError(f"{self.root} is already an online workspace")
        self.root.mkdir(parents=True, exist_ok=True)
        self.dvc("init", "--no-scm", "-q")
        remote = self.cfg.remote
        self.dvc("remote", "add", "-d", "-f", remote.name, str(remote.url))
        for key, value in (remote.get("options") or {}).items():
            if value is not None:
                self.dvc(
                    "remote",
                    "modify",
                    remote.name,
                    str(key),
                    str(value).lower() if isinstance(value, bool) else str(value),
                )
        n = int(self.cfg.shards)
        for i in range(n):
            write_qm9pack_csv(train[i::n], self.incoming / f"shard_{i:03d}.csv")
        write_qm9pack_csv(val, self.data / "val.csv")
        write_qm9pack_csv(test, self.data / "test.csv")
        (self.data / "train").mkdir(parents=True, exist_ok=True)
        version: dict[str, Any] = {}
        for _ in range(int(self.cfg.initial_shards)):
            version = self.arrive() or version
        return version

    def pending(self) -> list[Path]:
        return sorted(self.incoming.glob("shard_*.csv"))

    def arrive(self) -> Optional[dict[str, Any]]:
        """Makes the next shard available and versions the new data state; None if none left."""
        pending = self.pending()
        if not pending:
            return None
        shutil.move(str(pending[0]), self.data / "train" / pending[0].name)
        return self.commit()

    def commit(self) -> dict[str, Any]:
        """`dvc add` + `dvc push` of data/, recorded as the next data version.

        Skips DVC when the shards on disk are the current version's (each dvc call costs
        seconds); a shard copied in by hand is versioned on the next step.
        """
        current = self.current()
        on_disk = sorted(p.name for p in (self.data / "train").glob("*.csv"))
        if current and current["shards"] == on_disk and (self.root / "data.dvc").exists():
            return current
        self.dvc("add", "-q", "data")
        self.dvc("push", "-q")
        out = yaml.safe_load((self.root / "data.dvc").read_text())["outs"][0]
        shards = sorted(p.name for p in (self.data / "train").glob("*.csv"))
        previous = self.current()
        if previous and previous["md5"] == out["md5"]:
            return previous
        version = {
            "data_version": (previous["data_version"] + 1) if previous else 1,
            "md5": out["md5"],
            "n_train": sum(_rows(self.data / "train" / s) for s in shards),
            "n_val": _rows(self.data / "val.csv"),
            "n_test": _rows(self.data / "test.csv"),
            "shards": shards,
            "remote": str(self.cfg.remote.url),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (self.root / "versions").mkdir(exist_ok=True)
        shutil.copy(
            self.root / "data.dvc", self.root / "versions" / f"data-v{version['data_version']}.yaml"
        )
        append_jsonl(self.versions_file, version)
        return version

    def versions(self) -> list[dict[str, Any]]:
        return read_jsonl(self.versions_file)

    def current(self) -> Optional[dict[str, Any]]:
        versions = self.versions()
        return versions[-1] if versions else None

    def restore(self, data_version: int, into: Optional[Path] = None) -> Path:
        """Checks data version K out of DVC (from the remote if the cache lacks it)."""
        src = self.root / "versions" / f"data-v{data_version}.yaml"
        if not src.exists():
            raise FileNotFoundError(f"no data version {data_version} in {self.root}")
        shutil.copy(src, self.root / "data.dvc")
        self.dvc("pull", "-q", "--force", "data.dvc")
        return self.data


def _rows(path: Path) -> int:
    with open(path) as f:
        return max(0, sum(1 for _ in f) - 1)
