"""`make serve` / `make stop`'s path: `python -m serve start` in the background, then `stop`,
against the real torchserve (on free ports and a private TMPDIR, so a developer's server and
its pid file are never touched)."""

import json
import os
import subprocess
import sys

import pytest

from serve.client import http
from serve.config import CONFIG, ROOT, free_addresses, free_port, write_properties

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(
    (ROOT / "key_file.json").exists(), reason="a local `make serve` server is up (key_file.json)"
)
def test_start_prints_working_examples_then_stop_ends_it(graph_store, tmp_path):
    config = tmp_path / "ts.properties"
    props = write_properties(CONFIG, config, free_addresses())
    port = free_port()
    monitor = f"http://127.0.0.1:{port}/metrics"
    # torchserve's pid file goes to TMPDIR; the drift monitor listens on MONITOR_PORT.
    env = {**os.environ, "TMPDIR": str(tmp_path), "MONITOR_PORT": str(port)}

    def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "serve", *args]
        return subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )

    started = cli("start", "--config", str(config), "--store", str(graph_store))
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        names = sorted(p.stem for p in graph_store.glob("*.mar"))
        assert f"{len(names)} models READY: {', '.join(names)}" in started.stdout
        assert f"{props['inference_address']}/ping" in started.stdout
        tok = json.loads((ROOT / "key_file.json").read_text())["inference"]["key"]
        assert http(f"{props['inference_address']}/ping", tok)[0] == 200
        # ... and the v2 metadata server beside it (serve/v2_metadata.py), printed too.
        metadata = f"{props['v2_metadata_address']}/v2/models/{names[0]}"
        assert metadata in started.stdout
        assert http(metadata, tok)[0] == 200
        assert http(f"{metadata}/ready", tok)[0] == 200
        assert f"Drift monitor: {monitor}" in started.stdout
        gauges = http(monitor)[1].decode()
        assert "# TYPE bundle_drift_detected gauge" in gauges
        # ... and each model's READY workers, read from the management API with its token.
        for name in names:
            assert f'bundle_model_ready_workers{{model="{name}"}}' in gauges, gauges[-2000:]
        assert "bundle_management_up 1.0" in gauges
        again = cli("start", "--config", str(config), "--store", str(graph_store))
        assert "already running" in again.stdout
    finally:
        stopped = cli("stop", timeout=120)
    assert "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not (ROOT / "key_file.json").exists()  # torchserve --stop removes it
    assert "Drift monitor stopped." in stopped.stdout
    for url in (
        f"{props['inference_address']}/ping",
        f"{props['v2_metadata_address']}/v2/",
        monitor,
    ):
        with pytest.raises(OSError):  # nothing listens any more
            http(url, timeout=5)
