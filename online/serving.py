"""Hot swap through TorchServe's management API: register the new version, make it the
default, let requests in flight drain, then unregister the old versions."""

import json
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from serve.client import ManagementClient, http, token
from train.core.handlers import WARMUP_POS, WARMUP_Z

# The handler's own warm-up molecule (ethanol) is the drain request to a retiring version.
DRAIN_REQUEST = {"z": WARMUP_Z, "pos": WARMUP_POS}


def drain(
    inference: str, key_file: Optional[Path], model: str, version: str, timeout_s: float
) -> int:
    """Waits until a version has answered every request routed to it before the swap.

    A version's worker takes jobs from its queue in order, so once a request sent to that
    version explicitly (after set-default) is answered, every earlier job is done too. TorchServe
    kills a busy worker on unregister: without this, the requests it held would never return.
    """
    status, _ = http(
        f"{inference.rstrip('/')}/predictions/{model}/{version}",
        token("inference", key_file) if key_file is not None else None,
        method="POST",
        body=json.dumps(DRAIN_REQUEST).encode(),
        headers={"Content-Type": "application/json"},
        timeout=timeout_s,
    )
    return status


def mar_file_name(model: str, version: str) -> str:
    """The .mar name of one online version in the model store: qm9_et.v3.mar."""
    return f"{model}.{version}.mar"


def hot_swap(
    client: ManagementClient,
    model: str,
    version: str,
    mar: Path,
    model_store: str | Path,
    initial_workers: int = 1,
    drain_seconds: float = 0.5,
    log: Optional[Any] = None,
    inference: Optional[str] = None,
) -> dict[str, Any]:
    """Serves `version` as the default and retires every other version; idempotent.

    Order matters for zero failed requests: the new version is READY before it becomes the
    default, and an old one is unregistered only after it answered a drain request (see
    `drain`; without an inference URL, after `drain_seconds` alone) and `drain_seconds` more.
    """
    store = Path(model_store)
    name = mar_file_name(model, version)
    before = client.versions(model)
    if version not in before:
        if not (store / name).exists():
            shutil.copy(mar, store / name)
        client.register(name, initial_workers)
    client.set_default(model, version)
    retired = [v for v in before if v != version]
    drained = {}
    for old in retired:
        if inference:
            drained[old] = drain(inference, client.key_file, model, old, client.timeout_s)
        time.sleep(drain_seconds)
        client.unregister(model, old)
        # Keep the store to what is served, so a restart (`--models all`) loads this version.
        old_mar = store / mar_file_name(model, old)
        if old_mar.exists():
            old_mar.unlink()
    after = client.versions(model)
    result = {
        "model": model,
        "default": version,
        "before": before,
        "after": after,
        "drained": drained,
    }
    if log is not None:
        log("swap", **result, retired=retired)
    return result
