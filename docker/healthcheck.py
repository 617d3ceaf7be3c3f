"""Container readiness: every served model is registered with all its minWorkers workers READY.

`problems(runtime)` is the check; docker/entrypoint.py serves it tokenless at GET /ready on
PROBE_PORT (and answers 503 from SIGTERM on). Run as a script (Docker's HEALTHCHECK, exec
probes), this asks that endpoint, so every probe sees the same answer, draining included.
Reads $RUN_DIR/runtime.json that the entrypoint writes and, for problems(), the tokens in
key_file.json. Exit 0 when ready, 1 with the reasons. Standard library only.

TorchServe's /ping is not enough: 0.12 counts a worker as healthy while it is still loading
its model and for up to 5 minutes after it died (WorkerThread.isHealthy), and knows nothing of
a model whose registration failed. A worker is READY only once its handler's initialize(),
warm-up included, has returned (ts/model_loader.py answers the frontend's LOAD after it).
"""

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path


def get(url: str, token: str | None, timeout: float) -> tuple[int, object]:
    """GETs a URL; returns (status, parsed JSON or text)."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def tokens_of(runtime: dict) -> dict[str, str | None]:
    """The inference and management tokens (None with token auth off)."""
    if not runtime["token_auth"]:
        return {"inference": None, "management": None}
    keys = json.loads(Path(runtime["key_file"]).read_text())
    return {kind: keys[kind]["key"] for kind in ("inference", "management")}


def problems(runtime: dict, timeout: float = 5.0) -> list[str]:
    """Everything that keeps the container from answering every model; empty when ready."""
    tokens = tokens_of(runtime)
    status, body = get(f"{runtime['inference']}/ping", tokens["inference"], timeout)
    if status != 200 or not isinstance(body, dict) or body.get("status") != "Healthy":
        return [f"/ping answered {status}: {body}"]
    found = []
    for name in runtime["models"]:
        status, body = get(f"{runtime['management']}/models/{name}", tokens["management"], timeout)
        if status != 200 or not isinstance(body, list) or not body:
            found.append(f"{name}: describe answered {status}")
            continue
        workers = body[0].get("workers", [])
        wanted = max(int(body[0].get("minWorkers", 1)), 1)
        ready = sum(w.get("status") == "READY" for w in workers)
        if ready < max(wanted, len(workers)):
            found.append(f"{name}: {ready}/{max(wanted, len(workers))} workers READY")
    return found


def main() -> None:
    run_dir = Path(os.environ.get("RUN_DIR", "/tmp/torchserve"))
    try:
        runtime = json.loads((run_dir / "runtime.json").read_text())
        status, body = get(f"{runtime['probe']}/ready", None, 5.0)
        found = [] if status == 200 else [body]
        if isinstance(body, dict):
            found = body.get("problems", found)
    except (OSError, ValueError, KeyError) as e:
        found = [f"entrypoint not up yet: {e}"]
    if found:
        print("not ready: " + "; ".join(map(str, found)))
        sys.exit(1)
    print(f"ready: {', '.join(runtime['models'])}")


if __name__ == "__main__":
    main()
