"""Container health: /ping answers Healthy and every served model has all its workers READY.

Reads $RUN_DIR/runtime.json that docker/entrypoint.py writes (ports, models, token setting)
and the tokens TorchServe writes to key_file.json. Exit 0 when healthy, 1 with a reason
otherwise. Standard library only, so it costs a few tens of milliseconds per probe.
"""

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path


def get(url: str, token: str | None, timeout: float) -> tuple[int, object]:
    """GETs a TorchServe URL; returns (status, parsed JSON or text)."""
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


def problems(runtime: dict, timeout: float = 5.0) -> list[str]:
    """Everything that keeps the container from answering every model; empty when healthy."""
    tokens = {"inference": None, "management": None}
    if runtime["token_auth"]:
        keys = json.loads(Path(runtime["key_file"]).read_text())
        tokens = {kind: keys[kind]["key"] for kind in tokens}
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
        ready = sum(w.get("status") == "READY" for w in workers)
        if not workers or ready < len(workers):
            found.append(f"{name}: {ready}/{len(workers)} workers READY")
    return found


def main() -> None:
    run_dir = Path(os.environ.get("RUN_DIR", "/tmp/torchserve"))
    try:
        runtime = json.loads((run_dir / "runtime.json").read_text())
        found = problems(runtime)
    except (OSError, ValueError, KeyError) as e:
        found = [f"TorchServe not up yet: {e}"]
    if found:
        print("unhealthy: " + "; ".join(found))
        sys.exit(1)
    print(f"healthy: {', '.join(runtime['models'])}")


if __name__ == "__main__":
    main()
