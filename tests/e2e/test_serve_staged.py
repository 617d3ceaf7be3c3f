"""`make serve` in stages (serve/staged.py) against the real torchserve: it starts with the
models already built, and a model archived later is registered, READY with its model-config's
workers and batching, and answers while the first one keeps answering."""

from pathlib import Path

import pytest
import yaml

from serve.archive import build_mar
from serve.server import start
from serve.staged import serve_in_stages
from train.core.registry import spec

pytestmark = pytest.mark.e2e
FIRST, LATER = "mutag_gcn", "cora_gcn"


def test_a_model_built_later_joins_the_running_server(tiny_artifacts, examples_dir, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    build_mar(FIRST, tiny_artifacts, store)
    started_with: list[list[str]] = []
    ready: list[list[str]] = []
    said: list[str] = []
    servers = []

    def start_server(names: list[str]):
        started_with.append(list(names))
        servers.append(start(store, tmp_path / "ts", names, load=names))
        return servers[-1]

    def make(name: str) -> Path:
        # The running server sees the later model only once it is archived into its store.
        assert name not in servers[0].client().models()
        return build_mar(name, tiny_artifacts, store)

    def on_ready(server, names):
        ready.append(list(names))
        for name in names:  # every model READY so far answers its example
            body = (examples_dir / f"{name}.json").read_bytes()
            assert server.predict(name, body, "application/json")[0] == 200

    try:
        server = serve_in_stages(
            start_server,
            on_ready,
            models=[spec(LATER), spec(FIRST)],
            say=said.append,
            current=lambda name: (store / f"{name}.mar").exists(),
            make=make,
        )
        assert started_with == [[FIRST]] and ready == [[FIRST], [LATER]]
        assert server.client().models() == sorted([FIRST, LATER])
        config = yaml.safe_load((spec(LATER).model_config).read_text())
        described = server.client().describe(LATER)
        assert described["batchSize"] == config["batchSize"]
        assert len(described["workers"]) == config["minWorkers"]
        assert any(f"training {LATER}: about" in s for s in said), said
        assert any(s.startswith(f"READY {LATER} after") for s in said), said
        assert said[-1].startswith("all 2 models READY")
    finally:
        for srv in servers:
            srv.stop()
