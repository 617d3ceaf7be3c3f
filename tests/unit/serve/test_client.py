"""serve/client.py against a real local HTTP server: tokens, Authorization, the management API."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serve.client import ManagementClient, exchange, http, is_loopback, local_token, token


def keys(path, inference="inf-1", management="mgmt-1"):
    path.write_text(
        json.dumps({"inference": {"key": inference}, "management": {"key": management}})
    )
    return path


@pytest.fixture
def recorder():
    """A loopback HTTP server that records each request's method, path and Authorization."""
    seen: list[tuple[str, str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def answer(self):
            seen.append((self.command, self.path, self.headers.get("Authorization")))
            if self.path.startswith("/models/missing"):
                code, body = 404, b'{"code": 404, "message": "Model not found"}'
            elif self.path == "/models/m/all":
                code, body = 200, b'[{"modelVersion": "1"}, {"modelVersion": "2"}]'
            elif self.path == "/models/m":
                code, body = 200, b'[{"modelVersion": "2", "workers": []}]'
            else:
                code, body = 200, b'{"models": [{"modelName": "b"}, {"modelName": "a"}]}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = answer  # noqa: N815 (http.server's names)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()


def test_token_reads_each_kind(tmp_path):
    key_file = keys(tmp_path / "key_file.json")
    assert token("inference", key_file) == "inf-1"
    assert token("management", key_file) == "mgmt-1"


@pytest.mark.parametrize(
    "host, local",
    [
        ("http://127.0.0.1:8080", True),
        ("http://127.9.9.9:8080", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("127.0.0.1:8080", True),
        ("https://torchserve-xyz-ew.a.run.app", False),
        ("http://10.0.0.5:8080", False),
        ("http://127.0.0.1.example.com", False),
        ("", False),
    ],
)
def test_the_local_token_goes_only_to_loopback(tmp_path, host, local):
    key_file = keys(tmp_path / "key_file.json")
    assert is_loopback(host) is local
    assert local_token(host, key_file) == ("inf-1" if local else "")


def test_no_key_file_no_token(tmp_path):
    assert local_token("http://127.0.0.1:8080", tmp_path / "absent.json") == ""


def test_authorization_is_sent_only_with_a_token(recorder):
    base, seen = recorder
    assert http(f"{base}/ping")[0] == 200
    status, body, headers = exchange(f"{base}/ping", "t0k", "POST", b"{}")
    assert status == 200 and json.loads(body)["models"] and headers["Content-Length"]
    assert seen == [("GET", "/ping", None), ("POST", "/ping", "Bearer t0k")]


def test_management_client_rereads_the_token_on_every_call(recorder, tmp_path):
    base, seen = recorder
    key_file = keys(tmp_path / "key_file.json")
    client = ManagementClient(base, key_file)
    assert client.models() == ["a", "b"]
    keys(key_file, management="mgmt-2")  # TorchServe restarted: new tokens
    client.register("m.mar", 1, batch_size=4)
    assert [auth for *_, auth in seen] == ["Bearer mgmt-1", "Bearer mgmt-2"]
    method, path, _ = seen[-1]
    assert method == "POST" and path.startswith("/models?url=m.mar&batch_size=4")
    assert "synchronous=true" in path and "initial_workers=1" in path


def test_management_client_versions_and_errors(recorder, tmp_path):
    base, _ = recorder
    client = ManagementClient(base, None)  # token auth off
    assert client.versions("m") == {"1": False, "2": True}
    assert client.versions("missing") == {}
    with pytest.raises(RuntimeError, match="-> 404"):
        client.describe("missing")
