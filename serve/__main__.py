"""Controls the local TorchServe of `make serve` / `make stop`, and builds .mar files.

python -m serve start [--config F] [--store D] [--timeout S]   start, wait for READY (with the
                      [--staged]                               v2 metadata server and the
                                                               drift monitor beside it);
                                                               --staged: serve what is built,
                                                               then train and add the rest
                                                               (make serve; serve/staged.py)
python -m serve stop                                           stop both
python -m serve status                                         ready? every model's workers READY
python -m serve token [inference|management] [--host URL]      a token ("" for a remote host)
python -m serve build NAME... [--artifacts D] [--export-path D] [--version V]
python -m serve monitor [--port P] [--stop]                    Prometheus on loopback (make monitor)
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

from serve import prometheus
from serve.archive import build_mar
from serve.client import KEY_FILE, http, local_token, token
from serve.config import CONFIG, ROOT
from serve.monitor import PID_FILE, start_monitor, stop_by_pid_file
from serve.server import (
    Server,
    attach,
    is_up,
    model_names,
    not_ready,
    start,
    start_v2_metadata,
    stop_local,
    v2_is_up,
    wait_ready,
)
from serve.staged import serve_in_stages

# The handlers' payload logs, which the drift monitor of `make serve` reads (docs/monitoring.md).
PAYLOAD_DIR = ROOT / "payload_log"
MONITOR_PORT = int(os.environ.get("MONITOR_PORT", "8083"))


def serve(config: Path, store: Path, timeout: float) -> None:
    """Starts TorchServe in the background (unless it is already up) and waits for READY."""
    models = model_names(store)
    if not models:
        sys.exit(f"no .mar files in {store}: run `make archive` first")
    server = attach(config, ROOT)
    if is_up(server):
        print("TorchServe is already running.")
        wait_ready(server, models, timeout)
        if server.v2 and not v2_is_up(server.v2):
            start_v2_metadata(server, store, ROOT)
    else:
        server = start(
            store,
            ROOT,
            models,
            config=config,
            free_ports=False,
            timeout=timeout,
            payload_dir=PAYLOAD_DIR,
        )
    print(f"TorchServe is up with {len(models)} models READY: {', '.join(models)}")
    serve_monitor(store, server)
    print_examples(server, models)


def serve_staged(config: Path, store: Path, timeout: float) -> None:
    """`make serve`: TorchServe starts with the models already built; every other one is
    trained, archived and registered in turn (serve/staged.py). A server that is already up
    keeps what it serves and gets the models it lacks."""
    server = attach(config, ROOT)
    running = server if is_up(server) else None
    store.mkdir(parents=True, exist_ok=True)  # a fresh clone has none; torchserve needs it

    def start_server(names: list[str]) -> Server:
        return start(
            store,
            ROOT,
            names,
            config=config,
            free_ports=False,
            timeout=timeout,
            payload_dir=PAYLOAD_DIR,
            load=names,
        )

    def on_ready(server: Server, names: list[str]) -> None:
        serve_monitor(store, server)  # it reads the store's .mar files when it starts
        for line in curl_lines(server, names):
            print(f"  {line}")

    server = serve_in_stages(start_server, on_ready, ROOT, running=running)
    print_examples(server, server.client().models())


def serve_monitor(store: Path, server: Server) -> None:
    """Starts the drift monitor beside TorchServe, unless the one of `make serve` still runs;
    it also exports each model's READY workers, read from the management API."""
    stop_by_pid_file(ROOT / PID_FILE)
    workers = ["--management", server.management]
    if server.key_file is not None:
        workers += ["--key-file", str(Path(server.key_file).resolve())]
    # The QM9 online loop's workspace (configs/online/default.yaml): its realised MAE.
    workers += ["--online-workdir", str(ROOT / "data" / "online")]
    mon = start_monitor(
        store, PAYLOAD_DIR, ROOT / "logs", MONITOR_PORT, *workers, pid_file=ROOT / PID_FILE
    )
    print(f"Drift monitor: {mon.url} (payload logs in {PAYLOAD_DIR})")


def curl_lines(server: Server, models: list[str]) -> list[str]:
    """A curl command per model with an example (make examples), that works as written."""
    auth = '-H "Authorization: Bearer $(scripts/token)"'
    index_file = ROOT / "examples" / "index.json"
    index = json.loads(index_file.read_text()) if index_file.exists() else {}
    return [
        f"curl {auth} -H 'Content-Type: {index[name]['content_type']}' "
        f"--data-binary @examples/{index[name]['file']} {server.inference}/predictions/{name}"
        for name in models
        if name in index
    ]


def print_examples(server: Server, models: list[str]) -> None:
    """Prints curl commands that work against the running server as written."""
    auth = '-H "Authorization: Bearer $(scripts/token)"'
    print("\nTry it (tokens come from key_file.json, see README 'Security'):")
    print(f"  curl {auth} {server.inference}/ping")
    for line in curl_lines(server, models):
        print(f"  {line}")
    if server.v2 and models:  # TorchServe lacks v2 metadata: serve/v2_metadata.py answers it
        print(f"  curl {auth} {server.v2}/v2/models/{models[0]}")
        print(f"  curl {auth} {server.v2}/v2/models/{models[0]}/ready")
    print(f"  curl -s {server.metrics}/metrics | grep ts_inference_requests_total")
    print("  make stop")


def status(config: Path, store: Path) -> int:
    """Prints whether the local server is ready (the container's /ready rule); 0 when ready."""
    server = attach(config, ROOT)
    if not is_up(server):
        print("TorchServe is not running.")
        return 1
    models = model_names(store) or server.client().models()
    found = not_ready(server, models)
    if found:
        print(f"TorchServe at {server.inference} is not ready: {'; '.join(found)}")
        return 1
    print(f"TorchServe is ready at {server.inference}: {', '.join(models)}")
    return 0


MONITOR_DIR = ROOT / ".prometheus"


def monitor(port: int, stop: bool) -> None:
    """Starts Prometheus on 127.0.0.1:port with deploy/prometheus/ (or stops it); prints the URL."""
    if stop:
        print(
            "Prometheus stopped." if prometheus.stop_pid(MONITOR_DIR) else "No Prometheus running."
        )
        return
    url = f"http://127.0.0.1:{port}"
    try:
        running = (MONITOR_DIR / "prometheus.pid").exists() and http(f"{url}/-/ready")[0] == 200
    except OSError:
        running = False
    if not running:
        prometheus.start(MONITOR_DIR, port=port)
    print(f"Prometheus is up at {url} (alerts: {url}/alerts, targets: {url}/targets)")
    print(f"  scraping {', '.join(prometheus.scrape_targets())}; rules {prometheus.RULES}")
    print("  make monitor-stop")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start", help="start TorchServe with model_store/ and wait for READY")
    p_start.add_argument("--config", type=Path, default=CONFIG)
    p_start.add_argument("--store", type=Path, default=ROOT / "model_store")
    p_start.add_argument("--timeout", type=float, default=300)
    p_start.add_argument(
        "--staged", action="store_true", help="serve what is built, then train and add the rest"
    )
    sub.add_parser("stop", help="stop the TorchServe of `make serve`")
    p_status = sub.add_parser("status", help="ready? every model of the store has its workers")
    p_status.add_argument("--store", type=Path, default=ROOT / "model_store")
    p_tok = sub.add_parser("token", help="print a token from key_file.json")
    p_tok.add_argument("kind", nargs="?", default="inference", choices=["inference", "management"])
    p_tok.add_argument("--host", help="print the inference token only if HOST is this machine")
    p_build = sub.add_parser("build", help="pack artifacts into .mar files (model_archives/)")
    p_build.add_argument("names", nargs="+")
    p_build.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    p_build.add_argument("--export-path", type=Path, default=ROOT / "model_store")
    p_build.add_argument("--version", help="default: git commit and model.pt hash")
    p_mon = sub.add_parser("monitor", help="Prometheus on loopback with deploy/prometheus/")
    p_mon.add_argument("--port", type=int, default=9090)
    p_mon.add_argument("--stop", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "start":
        (serve_staged if args.staged else serve)(args.config, args.store, args.timeout)
    elif args.cmd == "stop":
        stop_local(ROOT)
        if stop_by_pid_file(ROOT / PID_FILE):
            print("Drift monitor stopped.")
    elif args.cmd == "status":
        sys.exit(status(CONFIG, args.store))
    elif args.cmd == "monitor":
        monitor(args.port, args.stop)
    elif args.cmd == "token":
        print(local_token(args.host, KEY_FILE) if args.host else token(args.kind, KEY_FILE))
    else:
        for name in args.names:
            try:
                print(build_mar(name, args.artifacts, args.export_path, args.version))
            except (FileNotFoundError, KeyError) as e:
                sys.exit(str(e))


if __name__ == "__main__":
    main()
