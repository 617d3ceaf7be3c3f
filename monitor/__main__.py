"""The drift monitor: python -m monitor [--store D] [--payload-dir D] [--port 8083] ...

Watches every .mar of the store that carries a drift reference, over its payload log, and serves
the drift gauges on http://<host>:<port>/metrics (monitor/service.py). `make serve` starts it
beside TorchServe and `make stop` stops it (serve/monitor.py).
"""

import argparse
import logging
from pathlib import Path
from typing import Optional

from prometheus_client import start_http_server

from monitor.service import Monitor, Settings
from online.metrics import OnlineCollector
from serve.workers import WorkersCollector

ROOT = Path(__file__).resolve().parent.parent


def main(argv: Optional[list[str]] = None) -> None:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m monitor", description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=ROOT / "model_store")
    p.add_argument("--payload-dir", type=Path, default=ROOT / "payload_log")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8083)
    p.add_argument("--window", type=int, default=d.window, help="records in the sliding window")
    p.add_argument("--every", type=int, default=d.every, help="test after this many new records")
    p.add_argument("--interval", type=float, default=d.interval, help="... or after this many s")
    p.add_argument("--min-records", type=int, default=d.min_records)
    p.add_argument("--alpha", type=float, default=d.alpha, help="family-wise level per window")
    p.add_argument("--n-perm", type=int, default=d.n_perm, help="MMD permutations")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between reads of the logs")
    p.add_argument("--management", help="TorchServe's management URL: also export READY workers")
    p.add_argument("--key-file", type=Path, help="TorchServe's key_file.json (token auth on)")
    p.add_argument(
        "--online-workdir", type=Path, help="the QM9 online loop's workspace: export its MAE"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings(
        args.window, args.every, args.interval, args.min_records, args.alpha, args.n_perm
    )
    monitor = Monitor(args.store, args.payload_dir, settings)
    monitor.refresh()
    if args.management:  # serve/workers.py: the state TorchServe's metrics API does not export
        monitor.metrics.registry.register(WorkersCollector(args.management, args.key_file))
    if args.online_workdir:  # online/metrics.py: the loop is a command, it serves nothing
        monitor.metrics.registry.register(OnlineCollector(args.online_workdir))
    start_http_server(args.port, addr=args.host, registry=monitor.metrics.registry)
    logging.getLogger("monitor").info("drift gauges on http://%s:%d/metrics", args.host, args.port)
    monitor.run(args.poll)


if __name__ == "__main__":
    main()
