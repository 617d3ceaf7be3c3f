"""Container entrypoint: TorchServe's config from the environment, started, and stopped cleanly.

Standard library only. Environment (all optional):
  AIP_HTTP_PORT, PORT  inference port: Vertex AI sets the first, Cloud Run the second (8080)
  TOKEN_AUTH           on (default): TorchServe's token authorization, tokens in
                       $RUN_DIR/key_file.json; off: none, for platforms whose IAM fronts the
                       container (Cloud Run, Vertex AI, KServe behind its gateway)
  MODELS               comma-separated model names, or all (default): every .mar in the store
  MODEL_STORE          folder of .mar files (default /home/model-server/model_store)
  BASE_CONFIG          config.properties to start from (default: the bundle's)
  METRICS_PORT         Prometheus metrics on 0.0.0.0:METRICS_PORT (default: loopback 8082 only)
  RUN_DIR              writable folder for the generated config, key file and unpacked models
  STOP_GRACE_S         seconds TorchServe gets after SIGTERM before SIGKILL (default 8)
  AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE  Vertex AI's routes, checked against what is served
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

HOME = Path("/home/model-server")
HERE = Path(__file__).resolve().parent
# Listeners that never leave the container: the inference port must not collide with them.
PRIVATE_PORTS = {"management": 8081, "metrics": 8082, "grpc_inference": 7070, "grpc_mgmt": 7071}


class ConfigError(Exception):
    """A setting the container cannot start with; the message says which and why."""


def inference_port(env: Mapping[str, str]) -> int:
    """AIP_HTTP_PORT (Vertex AI), else PORT (Cloud Run, KServe), else 8080."""
    raw = env.get("AIP_HTTP_PORT") or env.get("PORT") or "8080"
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"port {raw!r} (from AIP_HTTP_PORT/PORT) is not a TCP port")
    port = int(raw)
    private = {p: name for name, p in PRIVATE_PORTS.items()}
    if port in private or port == metrics_port(env):
        raise ConfigError(f"port {port} is taken by TorchServe's {private.get(port, 'metrics')}")
    return port


def metrics_port(env: Mapping[str, str]) -> int | None:
    """METRICS_PORT when the metrics listener should be reachable from outside, else None."""
    raw = env.get("METRICS_PORT")
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"METRICS_PORT={raw!r} is not a TCP port")
    return int(raw)


def token_auth(env: Mapping[str, str]) -> bool:
    """TOKEN_AUTH: on unless explicitly off."""
    value = env.get("TOKEN_AUTH", "on").strip().lower()
    if value not in ("on", "off", "true", "false", "1", "0"):
        raise ConfigError(f"TOKEN_AUTH={value!r}: use on or off")
    return value in ("on", "true", "1")


def served_models(env: Mapping[str, str], store: Path) -> list[str]:
    """The models to load: MODELS, or every .mar in the store; each must be in the store."""
    available = sorted(p.stem for p in store.glob("*.mar"))
    if not available:
        raise ConfigError(f"no .mar files in {store}")
    wanted = env.get("MODELS", "all").strip()
    if wanted in ("", "all"):
        return available
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    missing = [n for n in names if n not in available]
    if missing:
        raise ConfigError(f"MODELS names {missing}, not in {store} (has {available})")
    return names


def check_vertex_routes(env: Mapping[str, str], models: list[str]) -> None:
    """Vertex AI forwards to AIP_HEALTH_ROUTE and AIP_PREDICT_ROUTE: both must exist here."""
    health = env.get("AIP_HEALTH_ROUTE")
    if health and health != "/ping":
        raise ConfigError(f"AIP_HEALTH_ROUTE={health}: TorchServe's health route is /ping")
    predict = env.get("AIP_PREDICT_ROUTE")
    if predict:
        prefix = "/predictions/"
        name = predict[len(prefix) :] if predict.startswith(prefix) else None
        if name not in models:
            raise ConfigError(
                f"AIP_PREDICT_ROUTE={predict}: expected /predictions/<model> for one of {models}"
            )


def render_config(base: str, env: Mapping[str, str], store: Path) -> str:
    """The base config.properties with the container's listeners, store and token setting.

    Inference listens on all interfaces at the platform's port; management, gRPC and (unless
    METRICS_PORT is set) metrics stay on loopback, reachable only from inside the container.
    """
    port, mport = inference_port(env), metrics_port(env)
    overrides = {
        "inference_address": f"http://0.0.0.0:{port}",
        "management_address": f"http://127.0.0.1:{PRIVATE_PORTS['management']}",
        "metrics_address": (
            f"http://0.0.0.0:{mport}" if mport else f"http://127.0.0.1:{PRIVATE_PORTS['metrics']}"
        ),
        "grpc_inference_address": "127.0.0.1",
        "grpc_management_address": "127.0.0.1",
        "grpc_inference_port": str(PRIVATE_PORTS["grpc_inference"]),
        "grpc_management_port": str(PRIVATE_PORTS["grpc_mgmt"]),
        "model_store": str(store),
        # Registration by URL stays limited to the store's own .mar files.
        "allowed_urls": f"^file://{store}/[A-Za-z0-9_.-]+\\\\.mar$",
        "disable_token_authorization": "false" if token_auth(env) else "true",
    }
    lines, seen = [], set()
    for line in base.splitlines():
        key = line.split("=", 1)[0].strip()
        if not line.lstrip().startswith("#") and "=" in line and key in overrides:
            lines.append(f"{key}={overrides[key]}")
            seen.add(key)
        else:
            lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    return "\n".join(lines) + "\n"


def prepare(env: Mapping[str, str]) -> tuple[Path, list[str], list[str]]:
    """Writes the config and runtime.json under RUN_DIR; returns (run dir, models, command)."""
    store = Path(env.get("MODEL_STORE", str(HOME / "model_store")))
    base = Path(env.get("BASE_CONFIG", str(HOME / "config.properties")))
    run_dir = Path(env.get("RUN_DIR", "/tmp/torchserve"))
    models = served_models(env, store)
    check_vertex_routes(env, models)
    config = render_config(base.read_text(), env, store)
    (run_dir / "tmp").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.properties").write_text(config)
    runtime = {
        "inference": f"http://127.0.0.1:{inference_port(env)}",
        "management": f"http://127.0.0.1:{PRIVATE_PORTS['management']}",
        "models": models,
        "token_auth": token_auth(env),
        "key_file": str(run_dir / "key_file.json"),
    }
    (run_dir / "runtime.json").write_text(json.dumps(runtime, indent=2) + "\n")
    cmd = [
        "torchserve",
        "--start",
        "--foreground",
        "--ncs",
        "--ts-config",
        str(run_dir / "config.properties"),
        "--model-store",
        str(store),
        "--log-config",
        str(HERE / "log4j2.xml"),
        "--models",
        *(f"{name}={name}.mar" for name in models),
    ]
    return run_dir, models, cmd


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists (reaping our own zombies as PID 1 must)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def frontend_pid(run_dir: Path) -> int | None:
    """The Java frontend's pid, from the pid file the torchserve launcher writes in TEMP."""
    try:
        return int((run_dir / "tmp" / ".model_server.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def run(env: Mapping[str, str]) -> int:
    """Starts TorchServe; on SIGTERM/SIGINT stops it like `torchserve --stop` and waits."""
    run_dir, models, cmd = prepare(env)
    child_env = {k: v for k, v in env.items() if k != "TS_CONFIG_FILE"}  # it overrides --ts-config
    # TEMP: the launcher's pid file and unpacked models; TMPDIR: the workers' sockets.
    tmp = str(run_dir / "tmp")
    child_env.update(TEMP=tmp, TMPDIR=tmp, LOG_LOCATION=str(run_dir / "logs"))
    child_env.setdefault("METRICS_LOCATION", str(run_dir / "logs"))
    runtime = json.loads((run_dir / "runtime.json").read_text())
    print(f"entrypoint: serving {', '.join(models)} at {runtime['inference']}", flush=True)
    proc = subprocess.Popen(cmd, cwd=run_dir, env=child_env, start_new_session=True)
    stopping: list[int] = []

    def stop(signum: int, _frame: object = None) -> None:
        if stopping:
            return
        stopping.append(signum)
        # Like `torchserve --stop`: SIGTERM to the Java frontend, whose shutdown hook stops the
        # workers; the whole group when the frontend is not known (yet).
        pid = frontend_pid(run_dir)
        try:
            if pid:
                os.kill(pid, signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = proc.wait()
    requested = bool(stopping)
    if not requested:
        print(f"entrypoint: torchserve exited by itself with {code}", file=sys.stderr, flush=True)
        stop(signal.SIGTERM)  # take down what is left of the group
    deadline = time.monotonic() + float(env.get("STOP_GRACE_S", "8"))
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(proc.pid):
        print("entrypoint: TorchServe did not stop in time; SIGKILL", file=sys.stderr, flush=True)
        os.killpg(proc.pid, signal.SIGKILL)
        while group_alive(proc.pid):
            time.sleep(0.05)
        return 1
    if requested:
        print(f"entrypoint: TorchServe stopped on signal {stopping[0]}", flush=True)
        return 0
    return code or 1


def main() -> None:
    try:
        sys.exit(run(os.environ))
    except ConfigError as e:
        print(f"entrypoint: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
