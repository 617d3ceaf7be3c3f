"""serve/v2_metadata.py without TorchServe: TorchServe's token rule, a .mar's declarations, and
the routes that need no management API (tests/e2e/test_v2_metadata.py runs it beside the real
torchserve)."""

import json
import zipfile
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from contract import V2ModelMetadata
from serve import v2_metadata
from serve.config import ROOT


def key_file(tmp_path, minutes: float = 60):
    expires = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    path = tmp_path / "key_file.json"
    entry = {"key": "inf-KEY1", "expiration time": expires}
    path.write_text(json.dumps({"inference": entry, "management": {**entry, "key": "mgmt"}}))
    return path


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer inf-KEY1", True),
        ("Bearer \t inf-KEY1", True),
        ("  Bearer inf-KEY1 ", True),  # HTTP strips the value's surrounding white space
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer mgmt", False),
        ("bearer inf-KEY1", False),
        ("Basic inf-KEY1", False),
        ("Bearerinf-KEY1", False),
        ("Bearer inf-KEY1 x", False),
        ("Bearer\u00a0inf-KEY1", False),  # Java's \s is ASCII white space only
    ],
)
def test_the_bearer_rule_is_torchserves(tmp_path, header, ok):
    assert v2_metadata.authorized(header, key_file(tmp_path)) is ok


def test_an_expired_or_missing_key_refuses_and_tokens_off_allow(tmp_path):
    assert not v2_metadata.authorized("Bearer inf-KEY1", key_file(tmp_path, minutes=-1))
    assert not v2_metadata.authorized("Bearer inf-KEY1", tmp_path / "none.json")
    assert v2_metadata.authorized(None, None)


def test_declarations_come_from_the_mar_or_its_unpacked_folder(tmp_path):
    files = {
        "MAR-INF/MANIFEST.json": json.dumps(
            {"model": {"handler": "node_classifier.py", "modelVersion": "2.0"}}
        ),
        "node_classifier.py": (ROOT / "handlers" / "node_classifier.py").read_text(),
        "meta.json": json.dumps({"feature_dim": 5, "labels": ["a", "b", "c"]}),
    }
    mar, folder = tmp_path / "m.mar", tmp_path / "m"
    with zipfile.ZipFile(mar, "w") as z:
        for member, text in files.items():
            z.writestr(member, text)
            (folder / member).parent.mkdir(parents=True, exist_ok=True)
            (folder / member).write_text(text)
    kind, meta, version = v2_metadata.declarations(mar, mar.stat().st_mtime_ns)
    assert (kind, meta["feature_dim"], version) == ("NodeClassifierHandler", 5, "2.0")
    assert v2_metadata.declarations(folder, 0) == (kind, meta, version)
    md = v2_metadata.oip_v2.metadata(kind, meta, "m", version)
    msgspec.convert(md, V2ModelMetadata)  # the documented type of the answer
    assert md["inputs"][0]["shape"] == [-1, 5] and md["outputs"][-1]["shape"] == [-1, 3]


def test_routes_check_the_token_first_then_route(tmp_path):
    routes = v2_metadata.V2Metadata("http://127.0.0.1:1", tmp_path, key_file(tmp_path))
    assert routes.answer("/ready", {}) is None  # not a v2 route: another server's
    assert routes.answer("/v2/models/m", {}) == (400, v2_metadata.REFUSED)
    good = {"Authorization": "Bearer inf-KEY1"}
    assert routes.answer("/v2/nothing/here", good) == (404, v2_metadata.NOT_FOUND)
    # TorchServe's management API does not answer: a 503 that says so, not a crash.
    status, body = routes.answer("/v2/models/m/ready?x=1", good)
    assert status == 503 and body["code"] == 503 and body["message"]


def test_readiness_needs_every_worker_ready():
    ready = {"minWorkers": 1, "workers": [{"status": "READY"}]}
    assert v2_metadata.workers_problem(ready) is None
    assert v2_metadata.workers_problem({"minWorkers": 1, "workers": []}) == "0/1 workers READY"
    two = {"minWorkers": 1, "workers": [{"status": "READY"}, {"status": "UNLOADING"}]}
    assert v2_metadata.workers_problem(two) == "1/2 workers READY"


def test_the_server_answers_json_to_every_method(tmp_path):
    """GET goes to the routes; any other method, TRACE included, gets a JSON 405 (schemathesis
    found http.server's HTML 501)."""
    import http.client
    import threading

    server = v2_metadata.json_server("127.0.0.1", 0, lambda path, headers: (200, {"path": path}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for method, status in [("GET", 200), ("POST", 405), ("TRACE", 405), ("HEAD", 405)]:
            conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)
            conn.request(method, "/v2/x")
            resp = conn.getresponse()
            assert resp.status == status and resp.getheader("Content-Type") == "application/json"
            body = resp.read()
            if method == "HEAD":
                assert body == b""
            else:
                assert json.loads(body) == (
                    {"path": "/v2/x"} if status == 200 else v2_metadata.NOT_ALLOWED
                )
            conn.close()
    finally:
        server.shutdown()
