"""`make image-test`: builds the serving image, runs it as Cloud Run and Vertex AI would, and
checks that every model answers its example exactly as a local TorchServe does.

Usage: python scripts/image_test.py [--skip-build] [--image NAME] [--timeout S]

1. Builds the image (docker/base-image.sh and docker/wheelhouse.sh first when needed).
2. Starts a local TorchServe on free loopback ports with the same model_store/*.mar
   (serve.server.start) and records its answer to examples/<model>.*.
3. Cloud Run-like run: PORT=9090, TOKEN_AUTH=off, read-only root with a /tmp tmpfs, only
   that port published (on 127.0.0.1). Waits for the image's HEALTHCHECK; checks that no
   process runs as root, that the root is not writable but /tmp is, that only the inference
   port listens beyond loopback; sends each example as is, in the Vertex AI envelope
   and on KServe's v1 route; compares with the local answers; stops it with SIGTERM.
4. Vertex AI-like run with the defaults otherwise (token auth on): AIP_HTTP_PORT,
   AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE and MODELS for one model; no token is refused, the
   token from the container's key file works; SIGTERM again.
Exit status 0 only when every check passed. Needs podman (docker/podman.sh) or
CONTAINER_ENGINE=docker.
"""

import argparse
import base64
import hashlib
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.containers import (  # noqa: E402
    ENGINE,
    HEALTHCHECK,
    engine,
    listeners,
    run_container,
    wait_healthy,
)
from serve.client import http, parsed  # noqa: E402
from serve.server import start as start_server  # noqa: E402
from train.core.registry import served_models  # noqa: E402

BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
PASSED: list[str] = []
FAILED: list[str] = []


def report(ok: bool, what: str) -> bool:
    """Records and prints one check."""
    (PASSED if ok else FAILED).append(what)
    print(f"  [{'ok' if ok else 'FAIL'}] {what}", flush=True)
    return ok


def same(a: Any, b: Any, tol: float = 1e-5) -> bool:
    """JSON equality, with floats equal within tol (thread counts may differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and math.isclose(a, b, rel_tol=tol, abs_tol=tol)
        )
    return a == b


def build(image: str) -> None:
    """Base image and wheelhouse when missing, then the serve target."""
    if engine("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        subprocess.run([str(ROOT / "docker" / "base-image.sh")], check=True)
    if not list((ROOT / "docker" / "wheelhouse").glob("torch-*.whl")):
        subprocess.run([str(ROOT / "docker" / "wheelhouse.sh")], check=True)
    start = time.monotonic()
    subprocess.run(
        [*ENGINE, "build", "--network", "host", "--format", "docker", "--target", "serve"]
        + ["-t", image, str(ROOT)],
        check=True,
    )
    print(f"built {image} in {time.monotonic() - start:.0f} s")


def image_facts(image: str, models: list[str]) -> None:
    """Size, user, ports, health check, and that the baked .mar files are the local ones."""
    info = json.loads(engine("image", "inspect", image).stdout)[0]
    cfg = info.get("Config", {})
    print(f"image {image}: {info['Size'] / 1e9:.2f} GB uncompressed")
    report(cfg.get("User") not in (None, "", "root", "0"), f"runs as user {cfg.get('User')!r}")
    report(
        list(cfg.get("ExposedPorts", {})) == ["8080/tcp"],
        f"exposes {list(cfg.get('ExposedPorts', {}))}",
    )
    # docker keeps it under Config, podman at the top level.
    health = (cfg.get("Healthcheck") or info.get("Healthcheck") or {}).get("Test", [])
    report(health == ["CMD", *HEALTHCHECK], f"HEALTHCHECK {health}")
    sums = engine(
        "run",
        "--rm",
        "--network=none",
        "--entrypoint",
        "sha256sum",
        image,
        *(f"model_store/{m}.mar" for m in models),
    ).stdout.split()[::2]
    local = [
        hashlib.sha256((ROOT / "model_store" / f"{m}.mar").read_bytes()).hexdigest() for m in models
    ]
    report(sums == local, "the image holds the same .mar files as model_store/")


def reference_answers(models: list[str], examples: dict) -> dict[str, tuple[int, Any]]:
    """Each model's answer to its example from a local TorchServe on free ports."""
    work = Path(tempfile.mkdtemp(prefix="image-test-"))
    server = start_server(ROOT / "model_store", work, models, artifacts=ROOT / "artifacts")
    try:
        return {m: server_answer(server, m, examples[m]) for m in models}
    finally:
        server.stop()


def server_answer(server: Any, name: str, example: dict) -> tuple[int, Any]:
    """(status, parsed JSON) of the local server's answer to a model's example."""
    body = (ROOT / "examples" / example["file"]).read_bytes()
    return server.predict(name, body, example["content_type"])[:2]


def post(url: str, body: bytes, content_type: str, tok: str | None = None) -> tuple[int, Any]:
    status, raw = http(url, tok, "POST", body, {"Content-Type": content_type}, timeout=120)
    return status, parsed(raw)


def stop(name: str) -> None:
    """SIGTERM via `stop`; checks the exit status, the time, and the entrypoint's last word."""
    start = time.monotonic()
    engine("stop", "-t", "30", name, timeout=60)
    took = time.monotonic() - start
    state = json.loads(engine("inspect", name).stdout)[0]["State"]
    logs = engine("logs", name).stdout + engine("logs", name).stderr
    report(
        state["ExitCode"] == 0 and took < 25 and "TorchServe stopped on signal 15" in logs,
        f"SIGTERM: exit {state['ExitCode']} after {took:.1f} s",
    )
    engine("rm", "-f", name, check=False)


def instance(body: bytes, content_type: str) -> dict[str, Any]:
    """The example as one Vertex AI instance: JSON as is, text as {"text"}, images as {"b64"}."""
    if content_type == "application/json":
        return json.loads(body)
    if content_type.startswith("text/"):
        return {"text": body.decode("utf-8")}
    return {"b64": base64.b64encode(body).decode("ascii")}


def runs_as(name: str) -> None:
    """Inside the running container: every process non-root, and the root not writable."""
    uids = engine("exec", name, "sh", "-c", "stat -c %u /proc/[0-9]*").stdout.split()
    report(bool(uids) and "0" not in uids, f"processes run as uid(s) {sorted(set(uids))}")
    for path in ("/home/model-server/model_store/x", "/opt/venv/x", "/x"):
        write = engine("exec", name, "touch", path, check=False)
        report(write.returncode != 0, f"read-only root: touch {path} refused")
    tmp = engine("exec", name, "touch", "/tmp/x", check=False)
    report(tmp.returncode == 0, "/tmp (the tmpfs) is writable")


def cloud_run_like(image: str, models: list[str], examples: dict, expected: dict) -> None:
    """PORT set, IAM in front (TOKEN_AUTH=off), read-only root, only PORT published."""
    print("Cloud Run-like run: PORT=9090 TOKEN_AUTH=off --read-only --tmpfs /tmp")
    name = "image-test-cloudrun"
    try:
        base = run_container(
            image,
            name,
            {"PORT": "9090", "TOKEN_AUTH": "off"},
            9090,
            "--read-only",
            "--tmpfs",
            "/tmp:rw,size=2g,mode=1777",
        )
        report(True, f"healthy after {wait_healthy(name, 600):.0f} s")
        runs_as(name)
        open_ports = {p for p, where in listeners(name).items() if where == "any"}
        report(open_ports == {9090}, f"listening beyond loopback: {sorted(open_ports)}")
        for m in models:
            ex = examples[m]
            body = (ROOT / "examples" / ex["file"]).read_bytes()
            status, got = post(f"{base}/predictions/{m}", body, ex["content_type"])
            ok = status == expected[m][0] == 200 and same(got, expected[m][1])
            report(ok, f"{m}: /predictions answer equals the local server's ({status})")
            envelope = json.dumps({"instances": [instance(body, ex["content_type"])]}).encode()
            for route in (f"/predictions/{m}", f"/v1/models/{m}:predict"):
                status, got = post(f"{base}{route}", envelope, "application/json")
                ok = status == 200 and same(got, {"predictions": [expected[m][1]]})
                report(ok, f"{m}: {{'instances': [...]}} on {route} -> predictions ({status})")
    finally:
        if engine("container", "exists", name, check=False).returncode == 0:
            stop(name)


def vertex_like(image: str, model: str, examples: dict, expected: dict) -> None:
    """Vertex AI's variables for one model; token auth left at its default (on)."""
    print(f"Vertex AI-like run: AIP_HTTP_PORT=8085 MODELS={model}, token auth on (default)")
    name = "image-test-vertex"
    env = {
        "AIP_HTTP_PORT": "8085",
        "AIP_HEALTH_ROUTE": "/ping",
        "AIP_PREDICT_ROUTE": f"/predictions/{model}",
        "MODELS": model,
    }
    try:
        base = run_container(image, name, env, 8085)
        report(True, f"healthy after {wait_healthy(name, 300):.0f} s")
        ex = examples[model]
        body = (ROOT / "examples" / ex["file"]).read_bytes()
        status, _ = post(f"{base}/predictions/{model}", body, ex["content_type"])
        report(status in (400, 401), f"no token: refused with {status}")
        keys = json.loads(engine("exec", name, "cat", "/tmp/torchserve/key_file.json").stdout)
        tok = keys["inference"]["key"]
        status, got = post(f"{base}/predictions/{model}", body, ex["content_type"], tok)
        ok = status == 200 and same(got, expected[model][1])
        report(ok, f"{model}: with the container's token, equals the local server's ({status})")
    finally:
        if engine("container", "exists", name, check=False).returncode == 0:
            stop(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="localhost/torchserve-bundle:latest")
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args()
    models = served_models()
    index_file = ROOT / "examples" / "index.json"
    examples = json.loads(index_file.read_text()) if index_file.exists() else {}
    missing = [
        m for m in models if m not in examples or not (ROOT / "model_store" / f"{m}.mar").exists()
    ]
    if not models or missing:
        sys.exit(
            f"models {models}, without .mar or example: {missing}: run `make archive examples`"
        )
    if not args.skip_build:
        build(args.image)
    start = time.monotonic()
    image_facts(args.image, models)
    print(f"local TorchServe answers for {', '.join(models)}")
    expected = reference_answers(models, examples)
    for m, (status, _) in expected.items():
        report(status == 200, f"{m}: local server answers {status}")
    cloud_run_like(args.image, models, examples, expected)
    vertex_like(args.image, models[0], examples, expected)
    print(f"\n{len(PASSED)} passed, {len(FAILED)} failed ({time.monotonic() - start:.0f} s)")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
