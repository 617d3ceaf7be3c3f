"""The bundle against the servers a user would pick instead, on the same model and load.

python -m benchmarks.peers [--models mutag_gcn,cora_gcn,qm9_et,imdb_bert_int8,flowers_cnn]
                           [--seconds 10] [--connections 32]

For each model, one server at a time on loopback, each with the model's .mar and its committed
model-config (batchSize, maxBatchDelay):
- `torchserve`: this bundle, TorchServe 0.12 with the committed config.properties (token auth);
- `kserve`: this bundle's handlers under KServe's ModelServer with its own dynamic batching
  (serve/kserve_server.py), and `kserve-nobatch`, one request per call (`--no-batching`);
- `litserve`: the same handler under LitServe 0.2 with LitServe's batcher
  (benchmarks/peers_litserve.py).
TorchServe's stock handlers do not apply: `image_classifier` needs torchvision (which does not
install beside torch 2.13's CPU wheel), `text_classifier` captum and a word-n-gram vocabulary
where these models read BERT word pieces, and `BaseHandler`'s default preprocessing takes one
tensor, where the graph and molecule models take two.

Every server gets the same JSON body (the model's example; a review as `{"text"}`, a photo as
`{"b64"}`, which every handler takes) from the same load generator, wrk (Debian's, compiled C:
the CPU it takes is reported): each peer starts on a quiet machine (every process of the one
before gone, system CPU under 15%), then a 3 s warm-up and `--seconds` at 1 connection (p50
from wrk's latency distribution), a 3 s warm-up and `--seconds` at `--connections`
connections with 2 threads (requests/s). The
server's CPU seconds per 1,000 requests come from its whole process tree (psutil) over the
saturation run. Any non-2xx answer or socket error fails the run. Writes
benchmarks/results/peers.json.
"""

import argparse
import base64
import json
import re
import resource
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml

from benchmarks.common import RESULTS, example, machine, write_result
from serve.config import ROOT, free_port
from serve.server import start

PEER_VERSIONS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({p: m.version(p) for p in ('kserve', 'litserve', 'torch')}))"
)
MODELS = ["mutag_gcn", "cora_gcn", "qm9_et", "imdb_bert_int8", "flowers_cnn"]
PEERS = ["torchserve", "kserve", "kserve-nobatch", "litserve"]
KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"
LUA = """local f = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "application/json"
{auth}"""


def json_body(name: str) -> bytes:
    """The model's example as a JSON body that every handler takes."""
    body, ctype = example(name)
    if ctype == "application/json":
        return body
    if ctype.startswith("text/"):
        return json.dumps({"text": body.decode("utf-8")}).encode()
    return json.dumps({"b64": base64.b64encode(body).decode()}).encode()


def model_config(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "model_archives" / name / "model-config.yaml").read_text())


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not up after {timeout} s")


@contextmanager
def serving(peer: str, mar: Path, workdir: Path) -> Iterator[tuple[str, str, int]]:
    """Starts one peer with one model: (URL to post to, Authorization header or "", root pid)."""
    name = mar.stem
    if peer == "torchserve":
        store = workdir / "store"
        store.mkdir()
        (store / mar.name).symlink_to(mar)
        server = start(store, workdir, [name])
        try:
            assert server.proc is not None
            auth = f"Bearer {server.token()}"
            yield f"{server.inference}/predictions/{name}", auth, server.proc.pid
        finally:
            server.stop()
        return
    port = free_port()
    if peer.startswith("kserve"):
        cmd = [str(KSERVE_PYTHON), "-m", "serve.kserve_server", "--store", str(mar.parent)]
        cmd += ["--models", name, "--http-port", str(port), "--no-grpc"]
        cmd += ["--no-batching"] if peer == "kserve-nobatch" else []
        url, health = f"/v1/models/{name}:predict", "/v2/health/ready"
    else:
        config = model_config(name)
        cmd = [str(KSERVE_PYTHON), "-m", "benchmarks.peers_litserve", "--mar", str(mar)]
        cmd += ["--port", str(port), "--batch-size", str(config.get("batchSize", 1))]
        cmd += ["--batch-timeout-ms", str(config.get("maxBatchDelay", 0))]
        url, health = "/predict", "/health"
    log = open(workdir / f"{peer}.log", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_up(f"http://127.0.0.1:{port}{health}", proc)
        yield f"http://127.0.0.1:{port}{url}", "", proc.pid
    finally:
        # LitServe's and uvicorn's worker processes outlive a root that is gone: every one is
        # waited for (killed after 30 s), so none takes CPU from the next peer's run.
        procs = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
        for p in procs:
            p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=30)
        for p in alive:
            p.kill()
        proc.wait(timeout=60)
        log.close()


def settle(most_s: float = 30.0, busy_percent: float = 15.0) -> float:
    """Waits until the machine is quiet (system-wide CPU under `busy_percent` over a second),
    at most `most_s`; returns the last reading, recorded beside each peer's figures."""
    deadline = time.monotonic() + most_s
    while True:
        busy = psutil.cpu_percent(interval=1.0)
        if busy < busy_percent or time.monotonic() > deadline:
            return busy


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its live children."""
    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run: requests, requests/s, p50 ms, non-2xx and socket errors, wrk's CPU s."""
    threads = min(2, connections)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "30s"]
    cmd += ["--latency", "-s"]
    out = subprocess.run(
        [*cmd, str(script), url], capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # wrk prints a fixed text report; these are its own lines (no machine-readable output).
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    assert p50, out
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p50.group(2)]
    done = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(done.group(1)) if done else 0,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": round(float(p50.group(1)) * scale, 3),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
        "wrk_cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3),
    }


def measure(peer: str, mar: Path, body: Path, seconds: float, conns: int) -> dict[str, Any]:
    name = mar.stem
    idle = settle()
    with tempfile.TemporaryDirectory(prefix=f"peers-{peer}-") as tmp:
        with serving(peer, mar, Path(tmp)) as (url, auth, pid):
            script = Path(tmp) / "body.lua"
            header = f'wrk.headers["Authorization"] = "{auth}"' if auth else ""
            script.write_text(LUA.format(body=body, auth=header))
            ok = requests.post(
                url,
                data=body.read_bytes(),
                headers={
                    "Content-Type": "application/json",
                    **({"Authorization": auth} if auth else {}),
                },
                timeout=120,
            )
            if ok.status_code != 200:
                raise RuntimeError(f"{peer} {name}: {ok.status_code} {ok.text[:300]}")
            wrk(url, script, 1, 3)  # warm-up
            one = wrk(url, script, 1, seconds)
            wrk(url, script, conns, 3)
            cpu0 = tree_cpu(pid)
            many = wrk(url, script, conns, seconds)
            cpu = tree_cpu(pid) - cpu0
    for run in (one, many):
        if run["non_2xx"] or run["socket_errors"] or not run["requests"]:
            raise RuntimeError(f"{peer} {name}: failed requests {run}")
    return {
        "p50_ms_1_connection": one["p50_ms"],
        "rps_saturation": round(many["rps"], 1),
        "server_cpu_s_per_1000": round(cpu / many["requests"] * 1000, 3),
        "wrk_cpu_share": round(many["wrk_cpu_s"] / (many["wrk_cpu_s"] + cpu), 3),
        "requests": one["requests"] + many["requests"],
        "cpu_busy_percent_before": idle,
    }


def ahead(peers: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per peer: the bundle's better deployment (TorchServe or its handlers under KServe) over
    it, each ratio above 1 where the bundle is ahead: peer p50 / ours, our rps / peer's."""
    ours = [peers[p] for p in ("torchserve", "kserve") if p in peers]
    if not ours:
        return {}
    p50 = min(o["p50_ms_1_connection"] for o in ours)
    rps = max(o["rps_saturation"] for o in ours)
    return {
        peer: {
            "p50_1_connection": round(got["p50_ms_1_connection"] / p50, 2),
            "rps_saturation": round(rps / got["rps_saturation"], 2),
        }
        for peer, got in peers.items()
        if peer not in ("torchserve", "kserve")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--out", type=Path, default=RESULTS / "peers.json")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "command": "python -m benchmarks.peers "
        + " ".join(
            f"--{k} {v}"
            for k, v in (
                ("models", args.models),
                ("peers", args.peers),
                ("seconds", args.seconds),
                ("connections", args.connections),
            )
        ),
        "machine": machine(),
        # KServe and LitServe live in .venv-kserve, not in this Python.
        "peer_versions": json.loads(
            subprocess.run(
                [str(KSERVE_PYTHON), "-c", PEER_VERSIONS], capture_output=True, text=True
            ).stdout
            or "{}"
        ),
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0],
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="peers-bodies-") as tmp:
        for name in args.models.split(","):
            body = Path(tmp) / f"{name}.json"
            body.write_bytes(json_body(name))
            config = model_config(name)
            entry: dict[str, Any] = {
                "body_bytes": body.stat().st_size,
                "batchSize": config.get("batchSize", 1),
                "maxBatchDelay_ms": config.get("maxBatchDelay", 0),
                "peers": {},
            }
            for peer in args.peers.split(","):
                mar = args.store / f"{name}.mar"
                entry["peers"][peer] = measure(peer, mar, body, args.seconds, args.connections)
                print(name, peer, entry["peers"][peer], flush=True)
            entry["bundle_ahead_by"] = ahead(entry["peers"])
            result["models"][name] = entry
    write_result(result, args.out)


if __name__ == "__main__":
    main()
