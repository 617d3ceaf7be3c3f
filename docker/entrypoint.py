"""Container entrypoint: TorchServe's config from the environment, started, and stopped cleanly.

Standard library only (with serve/v2_metadata.py and the handlers' oip_v2, which are too).
Environment (all optional):
  AIP_HTTP_PORT, PORT  inference port: Vertex AI sets the first, Cloud Run the second (8080)
  TOKEN_AUTH           on (default): TorchServe's token authorization, tokens in
                       $RUN_DIR/key_file.json; off: none, for platforms whose IAM fronts the
                       container (Cloud Run, Vertex AI, KServe behind its gateway)
  MODELS               comma-separated model names, or all (default): every .mar in the store
  MODEL_STORE          folder of .mar files (default /home/model-server/model_store)
  BASE_CONFIG          config.properties to start from (default: the bundle's)
  METRICS_PORT         Prometheus metrics on 0.0.0.0:METRICS_PORT (default: loopback 8082 only)
  METRICS_CONFIG       TorchServe's metrics.yaml (default: the one beside BASE_CONFIG, else the
                       image's /home/model-server/metrics.yaml)
  RUN_DIR              writable folder for the generated config, key file and unpacked models
  PROBE_PORT           the tokenless probe server of this process on 0.0.0.0 (default 8086):
                       GET /ready 200 once every model has its workers READY, 503 with the
                       reasons otherwise and from SIGTERM on; GET /live 200 while TorchServe runs;
                       and, with the inference token, GET /v2/models/{m} and /v2/models/{m}/ready
                       (serve/v2_metadata.py: v2 metadata, which TorchServe lacks)
  DRAIN_TIMEOUT_S      after SIGTERM, at most this long waiting for in-flight predictions (5)
  DRAIN_QUIET_S        drained once no prediction was accepted or answered for this long (1)
  STOP_GRACE_S         seconds TorchServe gets after the drain before SIGKILL (default 4); with
                       DRAIN_TIMEOUT_S it stays under Cloud Run's 10 s between SIGTERM and SIGKILL
  PRIVATE_PORTS        e.g. management=18081,metrics=18082: loopback ports other than the
                       defaults below, to run beside another TorchServe (the e2e test does)
  AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE  Vertex AI's routes, checked against what is served
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

HOME = Path("/home/model-server")
HERE = Path(__file__).resolve().parent
# Listeners that never leave the container: the inference port must not collide with them.
PRIVATE_PORTS = {"management": 8081, "metrics": 8082, "grpc_inference": 7070, "grpc_mgmt": 7071}
DEFAULT_PROBE_PORT = 8086
# After SIGTERM: at most DRAIN_TIMEOUT_S for in-flight predictions, then STOP_GRACE_S for
# TorchServe's own stop (about 3 s measured) before SIGKILL: 9 s, under Cloud Run's 10 s.
DRAIN_TIMEOUT_S, STOP_GRACE_S = 5.0, 4.0


def _sibling(name: str):  # noqa: ANN202 (a module)
    """<name>.py beside this file (in the image all are in /opt/serve/), or in a checkout the
    harness's serve/<name>.py, whoever imports this."""
    path = HERE / f"{name}.py"
    if not path.exists():
        path = HERE.parent / "serve" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_serve_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _sibling("healthcheck")  # the readiness check /ready serves
# GET /v2/models/{m} and /ready, which TorchServe lacks: the harness's server, on PROBE_PORT.
v2_metadata = _sibling("v2_metadata")


class ConfigError(Exception):
    """A setting the container cannot start with; the message says which and why."""


def tcp_port(raw: str, name: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name}={raw!r} is not a TCP port")
    return int(raw)


def private_ports(env: Mapping[str, str]) -> dict[str, int]:
    """The loopback listeners: PRIVATE_PORTS's name=port pairs over the defaults."""
    ports = dict(PRIVATE_PORTS)
    for pair in filter(None, (p.strip() for p in env.get("PRIVATE_PORTS", "").split(","))):
        name, _, raw = pair.partition("=")
        if name not in ports:
            raise ConfigError(f"PRIVATE_PORTS names {name!r}; known: {sorted(ports)}")
        ports[name] = tcp_port(raw, f"PRIVATE_PORTS {name}")
    return ports


def inference_port(env: Mapping[str, str]) -> int:
    """AIP_HTTP_PORT (Vertex AI), else PORT (Cloud Run, KServe), else 8080."""
    port = tcp_port(env.get("AIP_HTTP_PORT") or env.get("PORT") or "8080", "AIP_HTTP_PORT/PORT")
    private = {p: name for name, p in private_ports(env).items()}
    if port in private or port == metrics_port(env):
        raise ConfigError(f"port {port} is taken by TorchServe's {private.get(port, 'metrics')}")
    return port


def probe_port(env: Mapping[str, str]) -> int:
    """PROBE_PORT, where this process answers /ready and /live; must be a port of its own."""
    port = tcp_port(env.get("PROBE_PORT", str(DEFAULT_PROBE_PORT)), "PROBE_PORT")
    taken = {inference_port(env), metrics_port(env), *private_ports(env).values()}
    if port in taken:
        raise ConfigError(f"PROBE_PORT={port} is one of TorchServe's ports")
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
    port, mport, private = inference_port(env), metrics_port(env), private_ports(env)
    overrides = {
        "inference_address": f"http://0.0.0.0:{port}",
        "management_address": f"http://127.0.0.1:{private['management']}",
        "metrics_address": (
            f"http://0.0.0.0:{mport}" if mport else f"http://127.0.0.1:{private['metrics']}"
        ),
        "grpc_inference_address": "127.0.0.1",
        "grpc_management_address": "127.0.0.1",
        "grpc_inference_port": str(private["grpc_inference"]),
        "grpc_management_port": str(private["grpc_mgmt"]),
        "model_store": str(store),
        # Registration by URL stays limited to the store's own .mar files.
        "allowed_urls": f"^file://{store}/[A-Za-z0-9_.-]+\\\\.mar$",
        "disable_token_authorization": "false" if token_auth(env) else "true",
    }
    if env.get("METRICS_CONFIG"):
        # By absolute path: TorchServe runs in RUN_DIR and would read a relative one from there.
        overrides["metrics_config"] = env["METRICS_CONFIG"]
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


def metrics_config(env: Mapping[str, str], base: Path) -> str:
    """METRICS_CONFIG, else the bundle's metrics.yaml beside the base config or in the image,
    else TorchServe's own (the handlers then log once that their model metrics are undeclared)."""
    if env.get("METRICS_CONFIG"):
        return env["METRICS_CONFIG"]
    for path in (base.parent / "metrics.yaml", HOME / "metrics.yaml"):
        if path.is_file():
            return str(path)
    spec = importlib.util.find_spec("ts")
    assert spec is not None and spec.origin is not None
    return str(Path(spec.origin).parent / "configs" / "metrics.yaml")


def prepare(env: Mapping[str, str]) -> tuple[Path, list[str], list[str]]:
    """Writes the config and runtime.json under RUN_DIR; returns (run dir, models, command)."""
    store = Path(env.get("MODEL_STORE", str(HOME / "model_store")))
    base = Path(env.get("BASE_CONFIG", str(HOME / "config.properties")))
    run_dir = Path(env.get("RUN_DIR", "/tmp/torchserve"))
    models = served_models(env, store)
    check_vertex_routes(env, models)
    config = render_config(
        base.read_text(), {**env, "METRICS_CONFIG": metrics_config(env, base)}, store
    )
    (run_dir / "tmp").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.properties").write_text(config)
    private = private_ports(env)
    runtime = {
        "inference": f"http://127.0.0.1:{inference_port(env)}",
        "management": f"http://127.0.0.1:{private['management']}",
        "metrics": f"http://127.0.0.1:{metrics_port(env) or private['metrics']}",
        "probe": f"http://127.0.0.1:{probe_port(env)}",
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


class Probes:
    """What /ready and /live answer: TorchServe's state, and whether a stop has begun."""

    def __init__(self, runtime: dict, proc: subprocess.Popen) -> None:
        self.runtime, self.proc = runtime, proc
        self.draining = threading.Event()

    def ready(self) -> list[str]:
        """Why traffic must not come here; empty when every model can answer."""
        if self.draining.is_set():
            return ["draining: SIGTERM received, finishing in-flight requests"]
        if self.proc.poll() is not None:
            return [f"TorchServe exited with {self.proc.returncode}"]
        try:
            return healthcheck.problems(self.runtime, timeout=2.0)
        except (OSError, ValueError, KeyError) as e:
            return [f"TorchServe not up yet: {e}"]

    def live(self) -> list[str]:
        """Empty while TorchServe runs: a draining or still-loading container is alive."""
        code = self.proc.poll()
        return [] if code is None else [f"TorchServe exited with {code}"]


def serve_probes(probes: Probes, port: int, v2: Any = None) -> ThreadingHTTPServer:
    """GET /ready and /live on 0.0.0.0:port in a daemon thread: 200, or 503 with the reasons.

    Tokenless, unlike TorchServe's /ping, so kubelet, Cloud Run and Docker can call it; it
    tells no more than the model names and their worker counts. With `v2` (a
    v2_metadata.V2Metadata) it also answers GET /v2/models/{m} and /ready, with TorchServe's
    token rule (serve/v2_metadata.py): the same server as the harness's, on this port.
    """
    checks: dict[str, Callable[[], list[str]]] = {"/ready": probes.ready, "/live": probes.live}

    def answer(path: str, headers: object) -> tuple[int, object]:
        found = v2.answer(path, headers) if v2 is not None else None
        if found is not None:
            return found
        check = checks.get(path.split("?", 1)[0])
        if check is None:
            return 404, {"error": f"no {path}; probes: {sorted(checks)}, /v2/models/<m>[/ready]"}
        problems = check()
        return (503, {"problems": problems}) if problems else (200, {"problems": []})

    server = v2_metadata.json_server("0.0.0.0", port, answer)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server


def prediction_counters(runtime: dict, timeout: float = 2.0) -> tuple[float, float]:
    """(predictions accepted, sum of answered predictions' latencies) from TorchServe's metrics.

    ts_inference_requests_total grows when a prediction is accepted, and
    ts_inference_latency_microseconds when one is answered; both count predictions only, not
    pings, probes or management calls. The Prometheus text is read by hand: two sums over
    labelled samples do not need a client library in this standard-library-only script.
    """
    with urllib.request.urlopen(f"{runtime['metrics']}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    sums = {"ts_inference_requests_total": 0.0, "ts_inference_latency_microseconds": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums["ts_inference_requests_total"], sums["ts_inference_latency_microseconds"]


def queued(runtime: dict, tokens: dict, timeout: float = 2.0) -> int:
    """Predictions waiting in the models' job queues (the management API's pendingRequests)."""
    total = 0
    for name in runtime["models"]:
        url = f"{runtime['management']}/models/{name}"
        status, body = healthcheck.get(url, tokens["management"], timeout)
        if status == 200 and isinstance(body, list) and body:
            total += int(body[0].get("jobQueueStatus", {}).get("pendingRequests", 0))
    return total


def drain(runtime: dict, deadline: float, quiet_s: float) -> tuple[bool, float]:
    """Waits until no prediction is queued, accepted or answered for quiet_s; (drained, seconds).

    TorchServe 0.12 has no drain of its own: its shutdown hook closes the listener and, after
    Netty's 2 s quiet period, every open connection, answered or not (pytorch/serve#2008). No
    metric counts the predictions inside a running batch, so the drain waits until the
    counters stand still for longer than a batch takes (DRAIN_QUIET_S, 1 s against batches of
    milliseconds to a few hundred here); queued ones are counted exactly.
    """
    started = time.monotonic()
    last, still_since = None, time.monotonic()
    while time.monotonic() < deadline:
        try:
            now = (*prediction_counters(runtime), queued(runtime, healthcheck.tokens_of(runtime)))
        except (OSError, ValueError, KeyError):
            # TorchServe does not answer: nothing it could still send.
            return False, time.monotonic() - started
        if now != last or now[2] > 0:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet_s:
            return True, time.monotonic() - started
        time.sleep(0.1)
    return False, time.monotonic() - started


def run(env: Mapping[str, str]) -> int:
    """Starts TorchServe; on SIGTERM/SIGINT: /ready turns 503, in-flight requests finish, stop."""
    run_dir, models, cmd = prepare(env)
    child_env = {k: v for k, v in env.items() if k != "TS_CONFIG_FILE"}  # it overrides --ts-config
    # TEMP: the launcher's pid file and unpacked models; TMPDIR: the workers' sockets.
    tmp = str(run_dir / "tmp")
    child_env.update(TEMP=tmp, TMPDIR=tmp, LOG_LOCATION=str(run_dir / "logs"))
    child_env.setdefault("METRICS_LOCATION", str(run_dir / "logs"))
    runtime = json.loads((run_dir / "runtime.json").read_text())
    print(f"entrypoint: serving {', '.join(models)} at {runtime['inference']}", flush=True)
    proc = subprocess.Popen(cmd, cwd=run_dir, env=child_env, start_new_session=True)
    probes = Probes(runtime, proc)
    v2 = v2_metadata.V2Metadata(
        runtime["management"],
        Path(env.get("MODEL_STORE", str(HOME / "model_store"))),
        Path(runtime["key_file"]) if runtime["token_auth"] else None,
    )
    probe_server = serve_probes(probes, probe_port(env), v2)
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object = None) -> None:
        if not stopping:
            stopping.append(signum)
            probes.draining.set()  # /ready answers 503 from now on: routers stop sending

    def stop_torchserve() -> None:
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

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while proc.poll() is None and not stopping:
        probes.draining.wait(0.2)
    if stopping:
        start = time.monotonic()
        drained, seconds = drain(
            runtime,
            start + float(env.get("DRAIN_TIMEOUT_S", DRAIN_TIMEOUT_S)),
            float(env.get("DRAIN_QUIET_S", "1")),
        )
        state = "drained" if drained else "drain cut short"
        print(f"entrypoint: signal {stopping[0]}: {state} after {seconds:.1f} s", flush=True)
        stop_torchserve()
    else:
        code = proc.returncode
        print(f"entrypoint: torchserve exited by itself with {code}", file=sys.stderr, flush=True)
        stop_torchserve()  # take down what is left of the group
    deadline = time.monotonic() + float(env.get("STOP_GRACE_S", STOP_GRACE_S))
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    probe_server.shutdown()
    if group_alive(proc.pid):
        print("entrypoint: TorchServe did not stop in time; SIGKILL", file=sys.stderr, flush=True)
        os.killpg(proc.pid, signal.SIGKILL)
        while group_alive(proc.pid):
            time.sleep(0.05)
        return 1
    if stopping:
        print(f"entrypoint: TorchServe stopped on signal {stopping[0]}", flush=True)
        return 0
    return proc.returncode or 1


def main() -> None:
    try:
        sys.exit(run(os.environ))
    except ConfigError as e:
        print(f"entrypoint: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
