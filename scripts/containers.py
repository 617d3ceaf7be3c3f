"""The container engine for the image tests: podman (docker/podman.sh) or CONTAINER_ENGINE."""

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = shlex.split(os.environ.get("CONTAINER_ENGINE", str(ROOT / "docker" / "podman.sh")))
HEALTHCHECK = ["python", "/opt/serve/healthcheck.py"]


def engine(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs one podman/docker command; returns the completed process (text output)."""
    run = subprocess.run(
        [*ENGINE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and run.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed: {run.stderr[-2000:]}")
    return run


def run_container(image: str, name: str, env: dict[str, str], port: int, *extra: str) -> str:
    """Starts the image detached with only `port` published on 127.0.0.1; returns host:port."""
    engine("rm", "-f", name, check=False)
    args = ["run", "-d", "--name", name, "-p", f"127.0.0.1::{port}"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    engine(*args, *extra, image)
    mapped = engine("port", name, f"{port}/tcp").stdout.strip().splitlines()[0]
    return "http://" + mapped.replace("0.0.0.0", "127.0.0.1")


def wait_healthy(name: str, timeout: float) -> float:
    """Runs the image's health check until it passes; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        state = json.loads(engine("inspect", name).stdout)[0]["State"]
        if not state.get("Running"):
            raise RuntimeError(f"{name} exited: {engine('logs', name).stdout[-3000:]}")
        if engine("exec", name, *HEALTHCHECK, check=False).returncode == 0:
            if ENGINE[-1].endswith("podman.sh") or ENGINE[0].endswith("podman"):
                # The HEALTHCHECK instruction itself, as podman runs it.
                engine("healthcheck", "run", name)
            return time.monotonic() - start
        time.sleep(2)
    raise TimeoutError(f"{name} not healthy after {timeout:.0f} s")


def listeners(name: str) -> dict[int, str]:
    """Listening TCP ports inside the container and their address ('loopback' or 'any')."""
    found: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        out = engine("exec", name, "cat", table, check=False).stdout.splitlines()[1:]
        for line in out:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":
                continue
            addr, port = local.split(":")
            loopback = addr in ("0100007F", "00000000000000000000000001000000") or addr.endswith(
                "0100007F"
            )
            found[int(port, 16)] = "loopback" if loopback else "any"
    return found
