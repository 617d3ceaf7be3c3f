"""Controls a local TorchServe: start, wait until every model is READY, stop, print curl examples.

Used by `make serve` / `make stop` and by the e2e tests. Standard library only.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent


def read_properties(path: Path) -> dict[str, str]:
    """Parses the key=value lines of a config.properties file."""
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def token(kind: str = "inference", key_file: Path = ROOT / "key_file.json") -> str:
    """Returns the inference or management token that TorchServe wrote at start-up."""
    return json.loads(Path(key_file).read_text())[kind]["key"]


def http(
    url: str,
    tok: Optional[str] = None,
    method: str = "GET",
    body: bytes | None = None,
    headers: Optional[dict[str, str]] = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    """Sends one request; returns (status, body) for any HTTP status."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if tok:
        req.add_header("Authorization", f"Bearer {tok}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def model_names(store: Path) -> list[str]:
    """The models a start with --models all loads: every .mar in the store."""
    return sorted(p.stem for p in Path(store).glob("*.mar"))


def wait_ready(
    management: str,
    models: list[str],
    key_file: Path,
    timeout: float = 300,
    proc: Optional[subprocess.Popen] = None,
) -> None:
    """Polls the management API until every model has all its workers READY."""
    deadline = time.monotonic() + timeout
    pending = list(models)
    while pending:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"torchserve exited with {proc.returncode} before models were ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"models not READY after {timeout:.0f}s: {pending}")
        try:
            mgmt = token("management", key_file)
            for name in list(pending):
                status, body = http(f"{management}/models/{name}", mgmt, timeout=5)
                if status == 200:
                    workers = json.loads(body)[0].get("workers", [])
                    if workers and all(w.get("status") == "READY" for w in workers):
                        pending.remove(name)
        except (OSError, KeyError, ValueError):
            pass  # server or key file not up yet
        if pending:
            time.sleep(0.5)


def is_up(inference: str, key_file: Path) -> bool:
    """True when a server answers /ping with our token."""
    try:
        return http(f"{inference}/ping", token("inference", key_file), timeout=2)[0] == 200
    except (OSError, KeyError, ValueError):
        return False


def start(config: Path, store: Path, timeout: float) -> None:
    """Starts TorchServe in the background (unless it is already up) and waits for READY."""
    props = read_properties(config)
    key_file = ROOT / "key_file.json"
    models = model_names(store)
    if not models:
        sys.exit(f"no .mar files in {store}: run `make archive` first")
    if is_up(props["inference_address"], key_file):
        print("TorchServe is already running.")
    else:
        (ROOT / "logs").mkdir(exist_ok=True)
        env = {
            **os.environ,
            "LOG_LOCATION": str(ROOT / "logs"),
            "METRICS_LOCATION": str(ROOT / "logs"),
        }
        cmd = [
            "torchserve",
            "--start",
            "--ts-config",
            str(config),
            "--model-store",
            str(store),
            "--models",
            "all",
            "--ncs",
        ]
        # The daemon must not hold our stdout/stderr open, or `make serve | tee` never ends.
        with open(ROOT / "logs" / "torchserve.out", "ab") as out:
            subprocess.run(
                cmd, cwd=ROOT, env=env, check=True, stdout=out, stderr=out, stdin=subprocess.DEVNULL
            )
    wait_ready(props["management_address"], models, key_file, timeout)
    print(f"TorchServe is up with {len(models)} models READY: {', '.join(models)}")
    print_examples(props["inference_address"], props["metrics_address"], models)


def print_examples(inference: str, metrics: str, models: list[str]) -> None:
    """Prints curl commands that work against the running server as written."""
    auth = '-H "Authorization: Bearer $(scripts/token)"'
    index_file = ROOT / "examples" / "index.json"
    index = json.loads(index_file.read_text()) if index_file.exists() else {}
    print("\nTry it (tokens come from key_file.json, see README 'Security'):")
    print(f"  curl {auth} {inference}/ping")
    for name in models:
        if name in index:
            entry = index[name]
            print(
                f"  curl {auth} -H 'Content-Type: {entry['content_type']}' "
                f"--data-binary @examples/{entry['file']} {inference}/predictions/{name}"
            )
    print(f"  curl -s {metrics}/metrics | grep ts_inference_requests_total")
    print("  make stop")


def stop() -> None:
    """Stops the TorchServe started from this folder."""
    subprocess.run(["torchserve", "--stop"], cwd=ROOT, check=False)


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running torchserve and how to talk to it."""

    inference: str
    management: str
    metrics: str
    key_file: Path
    artifacts: Path
    log_dir: Path
    proc: subprocess.Popen

    def predict(
        self, name: str, body: Any, content_type: str = "application/json", tok: str | None = None
    ) -> tuple[int, Any, dict]:
        """POSTs to /predictions/<name>; returns (status, JSON body, headers)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.inference}/predictions/{name}",
            data=data,
            method="POST",
            headers={"Content-Type": content_type},
        )
        req.add_header("Authorization", f"Bearer {tok or token('inference', self.key_file)}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            return e.code, parsed, dict(e.headers)


def start_server(
    store: Path,
    workdir: Path,
    artifacts: Path,
    models: list[str],
    config: Optional[Path] = None,
) -> Server:
    """Starts torchserve in the foreground on free ports, with the committed config otherwise.

    Used by the e2e tests and `make bench`; `stop_server` ends it. TMPDIR is set to workdir, so
    it does not collide with a `make serve` server (torchserve keeps a pid file in TMPDIR).
    """
    overrides = {
        f"{kind}_address": f"http://127.0.0.1:{free_port()}"
        for kind in ("inference", "management", "metrics")
    }
    overrides.update(grpc_inference_port=str(free_port()), grpc_management_port=str(free_port()))
    overrides["model_store"] = str(store)
    lines = [
        f"{line.split('=', 1)[0]}={overrides[line.split('=', 1)[0]]}"
        if line.split("=", 1)[0] in overrides
        else line
        for line in (config or ROOT / "config.properties").read_text().splitlines()
    ]
    props = "\n".join(lines) + "\n"
    (workdir / "config.properties").write_text(props)
    cfg = read_properties(workdir / "config.properties")
    log_dir = workdir / "logs"
    log_dir.mkdir(exist_ok=True)
    # TMPDIR: torchserve keeps its pid file there and refuses a second server sharing it.
    env = {
        **os.environ,
        "LOG_LOCATION": str(log_dir),
        "METRICS_LOCATION": str(log_dir),
        "TMPDIR": str(workdir),
    }
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    proc = subprocess.Popen(
        [
            "torchserve",
            "--start",
            "--foreground",
            "--ts-config",
            str(workdir / "config.properties"),
            "--model-store",
            str(store),
            "--models",
            "all",
            "--ncs",
        ],
        cwd=workdir,
        env=env,
        stdout=open(log_dir / "stdout.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(
        cfg["inference_address"],
        cfg["management_address"],
        cfg["metrics_address"],
        workdir / "key_file.json",
        artifacts,
        log_dir,
        proc,
    )
    try:
        wait_ready(server.management, models, server.key_file, timeout=240, proc=proc)
    except Exception:
        stop_server(server)
        raise
    return server


def stop_server(server: Server) -> int:
    """SIGTERM to the whole process group (frontend and workers); returns the exit code."""
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
    return server.proc.returncode


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start")
    p_start.add_argument("--config", type=Path, default=ROOT / "config.properties")
    p_start.add_argument("--store", type=Path, default=ROOT / "model_store")
    p_start.add_argument("--timeout", type=float, default=300)
    sub.add_parser("stop")
    p_tok = sub.add_parser("token")
    p_tok.add_argument("kind", nargs="?", default="inference", choices=["inference", "management"])
    args = parser.parse_args(argv)
    if args.cmd == "start":
        start(args.config, args.store, args.timeout)
    elif args.cmd == "stop":
        stop()
    else:
        print(token(args.kind))


if __name__ == "__main__":
    main()
