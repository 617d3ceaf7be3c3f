"""serve/server.py without starting Java: what a start waits for and refuses (the e2e tests
start the real torchserve through the same function)."""

import subprocess
import sys

import pytest

from serve.config import free_port
from serve.server import Server, attach, is_up, model_names, wait_ready


def server(tmp_path, proc=None) -> Server:
    port = free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}"
    return Server(url, url, url, tmp_path / "key_file.json", None, tmp_path, proc)


def test_model_names_are_the_stores_mar_files(tmp_path):
    for name in ("b", "a"):
        (tmp_path / f"{name}.mar").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert model_names(tmp_path) == ["a", "b"]


def test_a_server_that_exited_is_reported_not_waited_for(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_ready(server(tmp_path, proc), ["m"], timeout=30)


def test_no_answer_times_out_naming_what_is_pending(tmp_path):
    with pytest.raises(TimeoutError, match=r"\['m'\]"):
        wait_ready(server(tmp_path), ["m"], timeout=1)
    with pytest.raises(TimeoutError, match="management API"):
        wait_ready(server(tmp_path), [], timeout=1)


def test_attach_reads_the_committed_config_and_nothing_is_up(tmp_path):
    srv = attach(workdir=tmp_path)
    assert srv.inference == "http://127.0.0.1:8080" and srv.proc is None
    assert srv.stop() is None  # not started here: `python -m serve stop` stops it
    assert not is_up(server(tmp_path))


def test_cli_token_for_a_remote_host_is_empty():
    done = subprocess.run(
        [sys.executable, "-m", "serve", "token", "--host", "https://example.run.app"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "\n"


def test_cli_build_of_an_unknown_model_names_the_known_ones(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "serve", "build", "nope", "--artifacts", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "'nope' is not a served model" in done.stderr
