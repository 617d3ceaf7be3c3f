"""A real GCS emulator (gcp-storage-emulator) for the tests of GCS storage and DVC remotes."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def running(bucket: str, log: Path) -> Iterator[str]:
    """gcp-storage-emulator on a free loopback port with one bucket, in memory; yields its URL.

    While it runs, STORAGE_EMULATOR_HOST points google-cloud-storage at it, and gcsfs (DVC's
    dvc-gs) skips its probe of GCS's gRPC storage-layout API, which the emulator lacks.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).parent / "gcp-storage-emulator"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
            + ["--default-bucket", bucket],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{host}/storage/v1/b/{bucket}", timeout=1) as resp:
                    assert json.loads(resp.read())["name"] == bucket
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"emulator did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STORAGE_EMULATOR_HOST", host)
            mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
            yield host
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def object_names(host: str, bucket: str, prefix: str) -> list[str]:
    """The names of the bucket's objects under `prefix`, from the emulator's JSON API."""
    with urllib.request.urlopen(f"{host}/storage/v1/b/{bucket}/o?prefix={prefix}") as resp:
        return [o["name"] for o in json.loads(resp.read()).get("items", [])]
