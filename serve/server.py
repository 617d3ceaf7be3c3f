"""Starting and stopping torchserve: one start path for `make serve`, tests and benchmarks."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from serve.client import ManagementClient, exchange, http, parsed, token
from serve.config import CONFIG, ROOT, free_addresses, read_properties, write_properties
from serve.v2_metadata import workers_problem

# The launcher `torchserve` runs, without needing the venv's bin/ on PATH.
LAUNCHER = [sys.executable, "-c", "from ts.model_server import start; start()"]


@dataclass
class Server:
    """A running torchserve and how to talk to it."""

    inference: str
    management: str
    metrics: str
    key_file: Optional[Path]  # None: token authorization is off
    artifacts: Optional[Path]
    log_dir: Path
    proc: Optional[subprocess.Popen]  # None: a server this process did not start
    # The v2 metadata server beside it (serve/v2_metadata.py): its URL, and its process.
    v2: Optional[str] = None
    v2_proc: Optional[subprocess.Popen] = None
    payload_dir: Optional[Path] = None  # where the handlers write their payload logs, if on

    def token(self, kind: str = "inference") -> Optional[str]:
        return token(kind, self.key_file) if self.key_file is not None else None

    def client(self, timeout_s: float = 300) -> ManagementClient:
        return ManagementClient(self.management, self.key_file, timeout_s)

    def predict(
        self, name: str, body: Any, content_type: str = "application/json", tok: str | None = None
    ) -> tuple[int, Any, dict]:
        """POSTs to /predictions/<name>; returns (status, JSON body or text, headers)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, raw, headers = exchange(
            f"{self.inference}/predictions/{name}",
            tok or self.token(),
            "POST",
            data,
            {"Content-Type": content_type},
            timeout=60,
        )
        # A success must be JSON (a test reading it expects so); an error may be plain text.
        return status, json.loads(raw) if status < 300 else parsed(raw), dict(headers)

    def stop(self) -> Optional[int]:
        """SIGTERM to the whole process group (frontend and workers) and to the metadata
        server; returns torchserve's exit code."""
        if self.v2_proc is not None:
            terminate(self.v2_proc)
        if self.proc is None:
            return None  # not ours to stop (`python -m serve stop` stops `make serve`'s)
        return terminate(self.proc)


def terminate(proc: subprocess.Popen, timeout: float = 60) -> int:
    """SIGTERM to a process group we started, SIGKILL after `timeout`; its exit code."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def spawn(
    cmd: list[str], cwd: Path, log: Path, env: Optional[Mapping[str, str]] = None
) -> subprocess.Popen:
    """Starts a server in its own session (it outlives the caller until stopped), output to
    `log`: it must not hold our stdout/stderr open, or `make serve | tee` never ends."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def model_names(store: Path) -> list[str]:
    """The models a start with --models all loads: every .mar in the store."""
    return sorted(p.stem for p in Path(store).glob("*.mar"))


def start(
    store: Path,
    workdir: Path,
    models: Optional[Sequence[str]] = None,
    *,
    artifacts: Optional[Path] = None,
    config: Path = CONFIG,
    free_ports: bool = True,
    env: Optional[Mapping[str, str]] = None,
    token_auth: bool = True,
    timeout: float = 240,
    payload_dir: Optional[Path] = None,
    load: Optional[Sequence[str]] = None,
) -> Server:
    """Starts torchserve with every .mar of `store` and waits until `models` are READY.

    `load` names the .mar files to load instead of every one (`make serve` in stages: the
    stale ones of the store wait for their rebuild); an empty list loads none.

    free_ports=True (tests, benchmarks): a copy of `config` in `workdir` with loopback ports
    that are free, and TMPDIR=workdir, so it runs beside a `make serve` server (torchserve keeps
    its pid file in TMPDIR and refuses a second server sharing it). free_ports=False (`make
    serve`): `config` as it is and the usual TMPDIR, where `torchserve --stop` looks.
    `models` defaults to every .mar of the store; with none, it waits for the management API.
    The server runs in its own session: it outlives the caller until stopped. With
    `payload_dir`, the handlers write their payload logs there for the drift monitor.
    """
    workdir, store = Path(workdir), Path(store)
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    run_env = {**os.environ, **(env or {}), "LOG_LOCATION": str(log_dir)}
    run_env["METRICS_LOCATION"] = str(log_dir)
    if payload_dir is not None:
        run_env["BUNDLE_PAYLOAD_DIR"] = str(payload_dir)  # handlers/payload_log.py
    run_env["PATH"] = f"{Path(sys.executable).parent}:{run_env.get('PATH', '')}"
    if free_ports:
        overrides = {**free_addresses(), "model_store": str(store)}
        metrics_config = read_properties(config).get("metrics_config")
        if metrics_config:  # relative to the config's folder, not to `workdir`
            overrides["metrics_config"] = str((Path(config).parent / metrics_config).resolve())
        src, config = config, workdir / "config.properties"
        props = write_properties(src, config, overrides)
        run_env["TMPDIR"] = str(workdir)
    else:
        props = read_properties(config)
    cmd = [*LAUNCHER, "--start", "--foreground", "--ncs", "--ts-config", str(config)]
    cmd += ["--model-store", str(store)]
    if load is None:
        cmd += ["--models", "all"]
    elif load:
        cmd += ["--models", *(f"{m}={m}.mar" for m in load)]
    if not token_auth:
        cmd.append("--disable-token-auth")
    # torchserve writes key_file.json to its working directory.
    proc = spawn(cmd, workdir, log_dir / "torchserve.out", run_env)
    server = Server(
        props["inference_address"],
        props["management_address"],
        props["metrics_address"],
        workdir / "key_file.json" if token_auth else None,
        artifacts,
        log_dir,
        proc,
        payload_dir=payload_dir,
    )
    try:
        wait_ready(server, model_names(store) if models is None else list(models), timeout)
        if props.get("v2_metadata_address"):
            server.v2 = props["v2_metadata_address"]
            server.v2_proc = start_v2_metadata(server, store, workdir)
    except BaseException:
        server.stop()
        raise
    return server


# `make serve`'s metadata server, for `make stop` (torchserve keeps its own pid file).
V2_PID_FILE = ".v2_metadata.pid"


def start_v2_metadata(server: Server, store: Path, workdir: Path) -> subprocess.Popen:
    """Starts serve/v2_metadata.py for `server` (in its own session, like torchserve) and
    waits until it listens; its pid goes to workdir/.v2_metadata.pid."""
    assert server.v2 is not None
    cmd = [sys.executable, "-m", "serve.v2_metadata", "--address", server.v2]
    cmd += ["--management", server.management, "--store", str(Path(store).resolve())]
    if server.key_file is not None:
        cmd += ["--key-file", str(Path(server.key_file).resolve())]
    proc = spawn(cmd, ROOT, server.log_dir / "v2_metadata.out")
    (Path(workdir) / V2_PID_FILE).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 30
    while not v2_is_up(server.v2):
        if proc.poll() is not None or time.monotonic() > deadline:
            terminate(proc)
            log = (server.log_dir / "v2_metadata.out").read_text()[-2000:]
            raise RuntimeError(f"v2 metadata server did not start:\n{log}")
        time.sleep(0.2)
    return proc


def v2_is_up(url: str) -> bool:
    """Whether the v2 metadata server listens at `url` (any answer counts)."""
    try:
        http(f"{url}/v2/models", timeout=2)
        return True
    except OSError:
        return False


def wait_ready(server: Server, models: list[str], timeout: float = 300) -> float:
    """Polls the management API until every model has all its workers READY; returns seconds.

    With no models, until the management API answers at all (a server with an empty store).
    """
    started = time.monotonic()
    pending = list(models)
    while True:
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"torchserve exited with {server.proc.returncode} before READY")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not READY after {timeout:.0f}s: {pending or 'management API'}")
        try:
            mgmt = server.token("management")
            if not pending:
                if http(f"{server.management}/models", mgmt, timeout=5)[0] == 200:
                    return time.monotonic() - started
            for name in list(pending):
                status, body = http(f"{server.management}/models/{name}", mgmt, timeout=5)
                workers = json.loads(body)[0].get("workers", []) if status == 200 else []
                if workers and all(w.get("status") == "READY" for w in workers):
                    pending.remove(name)
            if not pending and models:
                return time.monotonic() - started
        except (OSError, KeyError, ValueError):
            pass  # server or key file not up yet
        time.sleep(0.5)


def not_ready(server: Server, models: Sequence[str]) -> list[str]:
    """Why the server cannot answer every model; empty when each has its minWorkers READY.

    The rule of docker/healthcheck.py (the container's /ready): /ping alone says Healthy while
    workers are still loading or dead (docs/reliability.md section 5).
    """
    try:
        status, _ = http(f"{server.inference}/ping", server.token(), timeout=5)
        if status != 200:
            return [f"/ping answered {status}"]
        found = []
        for name in models:
            status, body = http(
                f"{server.management}/models/{name}", server.token("management"), timeout=5
            )
            if status != 200:
                found.append(f"{name}: describe answered {status}")
                continue
            problem = workers_problem(json.loads(body)[0])
            if problem:
                found.append(f"{name}: {problem}")
        return found
    except (OSError, KeyError, ValueError) as e:
        return [f"not answering: {e}"]


def attach(config: Path = CONFIG, workdir: Path = CONFIG.parent) -> Server:
    """The server that `config` describes, started elsewhere (e.g. by `make serve`)."""
    props = read_properties(config)
    return Server(
        props["inference_address"],
        props["management_address"],
        props["metrics_address"],
        Path(workdir) / "key_file.json",
        None,
        Path(workdir) / "logs",
        None,
        props.get("v2_metadata_address"),
    )


def is_up(server: Server) -> bool:
    """True when the server answers /ping with our token (token auth also guards /ping)."""
    try:
        return http(f"{server.inference}/ping", server.token(), timeout=2)[0] == 200
    except (OSError, KeyError, ValueError):
        return False


def stop_local(root: Path) -> None:
    """Stops the torchserve that `make serve` started (its pid file is in the usual TMPDIR),
    and its v2 metadata server (pid in root/.v2_metadata.pid)."""
    pid_file = Path(root) / V2_PID_FILE
    try:
        pid = int(pid_file.read_text())
        # Only when the pid is still that server's (not a later process given the same pid).
        if b"serve.v2_metadata" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.killpg(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass  # not running
    pid_file.unlink(missing_ok=True)
    subprocess.run([*LAUNCHER, "--stop"], cwd=root, check=False)
