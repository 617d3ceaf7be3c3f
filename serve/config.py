"""TorchServe's config.properties: read it, and write a copy with some keys replaced."""

import random
import socket
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config.properties"
# Every listener a torchserve opens, and the harness's v2 metadata server beside it
# (serve/v2_metadata.py); a second server beside `make serve` needs all of them free.
ADDRESS_KEYS = ("inference_address", "management_address", "metrics_address", "v2_metadata_address")
PORT_KEYS = ("grpc_inference_port", "grpc_management_port")
# Worker ports one server may use: every worker start, restarts included, takes the next one.
WORKER_PORT_SPAN = 500


def read_properties(path: Path) -> dict[str, str]:
    """Parses the key=value lines of a config.properties file."""
    props = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def write_properties(src: Path, dest: Path, overrides: Mapping[str, str]) -> dict[str, str]:
    """Copies `src` to `dest` with each key of `overrides` set (replaced in place, or appended);
    returns the properties of the copy. Comments and order stay, so the copy reads like `src`."""
    pending = dict(overrides)
    lines = []
    for line in Path(src).read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in pending:
            line = f"{key}={pending.pop(key)}"
        lines.append(line)
    lines += [f"{key}={value}" for key, value in pending.items()]
    Path(dest).write_text("\n".join(lines) + "\n")
    return read_properties(dest)


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_addresses() -> dict[str, str]:
    """Loopback addresses and gRPC ports for every listener, all free and all different.

    Each port is held until all are picked: the kernel never hands out one still bound, so two
    listeners cannot get the same port (closing each socket at once allows that).
    """
    socks = []
    try:
        for _ in ADDRESS_KEYS + PORT_KEYS:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
    out = {key: f"http://127.0.0.1:{port}" for key, port in zip(ADDRESS_KEYS, ports)}
    out.update({key: str(port) for key, port in zip(PORT_KEYS, ports[len(ADDRESS_KEYS) :])})
    out["initial_worker_port"] = str(worker_port_base())
    return out


def worker_port_base(
    span: int = WORKER_PORT_SPAN, lo: int = 10_000, hi: int = 60_000, tmp: Path = Path("/tmp")
) -> int:
    """A first worker port whose `span` successors have no worker socket in /tmp yet.

    TorchServe's frontend names each worker's Unix socket /tmp/.ts.sock.<port> (Java's
    java.io.tmpdir, whatever TMPDIR says), counting up from initial_worker_port (9000), and a new
    worker unlinks a socket file of that name: two servers on one host (tests beside `make serve`)
    would take each other's workers. So each server the harness starts gets its own range.
    """
    rng = random.SystemRandom()
    for _ in range(1000):
        base = rng.randrange(lo, hi - span + 1)
        if not any((tmp / f".ts.sock.{port}").exists() for port in range(base, base + span)):
            return base
    raise RuntimeError(f"no range of {span} worker ports without a socket in {tmp}")
