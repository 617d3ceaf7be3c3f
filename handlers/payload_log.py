"""The payload log: one compact JSON line per sampled served item, for the drift monitor.

Never the payload itself (STYLE.md): a record holds the time, model, version, the family's input
statistics (the request helpers' `*_stats`, which training's reference profile also calls), the
model's penultimate embedding (its scripted `embed`) and the prediction:
    {"time": 1764650000.1, "model": "mutag_gcn", "version": "1.0",
     "stats": {"nodes": 17.0, "degree": 2.2, "feature_density": 0.14},
     "embedding": [0.1, ...], "prediction": 1}
The monitor (`python -m monitor`) tails these files; all drift work happens there, off the
request path.

Files: <dir>/<model>/<pid>.jsonl, one per worker (two processes must not rotate one file), each
rotated by size by the standard library's RotatingFileHandler, so a worker holds at most
(backups + 1) * max_bytes. A worker that starts removes the files of workers that are gone.
<dir> is $BUNDLE_PAYLOAD_DIR (the serve/ harness sets it) or the model-config's
`payload_log_dir`; with neither, nothing is logged. Settings, in model-config.yaml's `handler:`:
payload_log_rate (share of items logged, 0 to 1), payload_log_max_bytes, payload_log_backups.

A family handler supplies `drift_stats(item) -> dict` and `drift_prediction(item, result)`, and
`drift_embeddings(items) -> (B, H)` where `self.model.embed(*self.collate(items))` is not it.

The request path only samples and queues: a thread of the worker computes the records (the
statistics and the embedding's second pass through the model) and writes them after the answers
have gone. The queue is bounded (`payload_log_queue` batches); when it is full, as under
saturation, a batch goes unlogged rather than waiting. Nothing here may fail a request: a record
that cannot be made or written is dropped and counted.
"""

import json
import logging
import os
import queue
import random
import threading
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Optional

import torch

ENV_DIR = "BUNDLE_PAYLOAD_DIR"
DEFAULTS = {
    "payload_log_rate": 1.0,
    "payload_log_max_bytes": 4 * 2**20,
    "payload_log_backups": 2,
    "payload_log_queue": 16,
}

WRITE_DELAY_S = 0.005

log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PayloadLog:
    """One worker's rotating payload log for one model."""

    def __init__(
        self,
        folder: Path,
        model: str,
        version: str,
        rate: float,
        max_bytes: int,
        backups: int,
        queue_size: int = 16,
    ) -> None:
        self.model, self.version, self.rate = model, version, rate
        self.folder = Path(folder) / model
        self.folder.mkdir(parents=True, exist_ok=True)
        self.remove_stale()
        self.path = self.folder / f"{os.getpid()}.jsonl"
        self.dropped = 0
        self.rng = random.Random()
        # A logger of its own, outside the logging tree: its lines never reach TorchServe's log.
        self.logger = logging.Logger(f"payload_log.{model}")
        self.logger.propagate = False
        handler = RotatingFileHandler(
            self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger.addHandler(handler)
        self.skipped = 0  # batches not logged because the queue was full
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        threading.Thread(target=self._drain, name="payload-log", daemon=True).start()

    @classmethod
    def open(cls, config: dict[str, Any], context: Any) -> Optional["PayloadLog"]:
        """The log that the config and environment ask for, for the model of the worker's
        context (its MAR manifest); None when off (no folder, rate 0, not writable)."""
        manifest = (getattr(context, "manifest", None) or {}).get("model") or {}
        model = str(manifest.get("modelName") or "model")
        version = str(manifest.get("modelVersion") or "")
        cfg = {**DEFAULTS, **config}
        folder = os.environ.get(ENV_DIR) or cfg.get("payload_log_dir")
        rate = float(cfg["payload_log_rate"])
        if not folder or rate <= 0:
            return None
        try:
            return cls(
                Path(folder),
                model,
                version,
                min(rate, 1.0),
                int(cfg["payload_log_max_bytes"]),
                int(cfg["payload_log_backups"]),
                int(cfg["payload_log_queue"]),
            )
        except OSError as e:
            log.warning("payload log off: %s", e)
            return None

    def remove_stale(self) -> None:
        """Deletes the files of workers of this model that no longer run (restarted, scaled)."""
        for f in self.folder.glob("*.jsonl*"):
            pid = f.name.split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                f.unlink(missing_ok=True)

    def observe(self, handler: Any, items: list[Any], results: list[Any]) -> None:
        """Queues a sample of one batch's served items for the writer thread; never raises or
        waits."""
        picked = [i for i in range(len(items)) if self.rng.random() < self.rate]
        if not picked:
            return
        job = (handler, [items[i] for i in picked], [results[i] for i in picked], time.time())
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.skipped += 1

    def flush(self, timeout: float = 30.0) -> None:
        """Waits until every queued batch is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _drain(self) -> None:
        while True:
            job = self.queue.get()
            # Let the worker finish the batch and send its answers first: woken at once, this
            # thread would take the GIL from the rest of the request (its 5 ms switch interval).
            time.sleep(WRITE_DELAY_S)
            try:
                self.write(*job)
            except Exception:  # noqa: BLE001 - the payload log must never take the worker down
                self.dropped += 1
                if self.dropped & (self.dropped - 1) == 0:  # the 1st, 2nd, 4th, 8th, ... failure
                    log.exception("payload log: %d batches not logged", self.dropped)
            finally:
                self.queue.task_done()

    def write(self, handler: Any, items: list[Any], results: list[Any], when: float) -> None:
        """One record per item: statistics, embedding, prediction."""
        emb = embeddings(handler, items)
        for j, item in enumerate(items):
            record: dict[str, Any] = {
                "time": round(when, 3),
                "model": self.model,
                "version": self.version,
                "stats": handler.drift_stats(item),
                "prediction": handler.drift_prediction(item, results[j]),
            }
            if emb is not None:
                record["embedding"] = [round(v, 5) for v in emb[j].tolist()]
            self.logger.info(json.dumps(record, separators=(",", ":")))


def embeddings(handler: Any, items: list[Any]) -> Optional[torch.Tensor]:
    """(B, H) float CPU embeddings of `items` from the model's `embed`; None when it has none."""
    if not hasattr(handler.model, "embed"):
        return None
    from json_batch_handler import to_device  # imported here: that module imports this one

    device = getattr(handler, "device", None) or "cpu"
    with torch.inference_mode(), torch.jit.optimized_execution(handler.jit_optimize):
        custom = getattr(handler, "drift_embeddings", None)
        if custom is not None:
            out = custom(items)
        else:
            out = handler.model.embed(*to_device(handler.collate(items), device))
    return out.float().cpu()


def observe(handler: Any, items: list[Any], results: list[Any]) -> None:
    """The base handler's hook: logs the batch when the handler has a payload log."""
    plog = getattr(handler, "payload_log", None)
    if plog is not None and items:
        try:
            plog.observe(handler, items, results)
        except Exception:  # noqa: BLE001 - the payload log must never fail a request
            log.exception("payload log: batch not queued")
