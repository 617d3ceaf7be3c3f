"""Open Inference Protocol v2 model metadata and readiness beside TorchServe, which has neither.

GET /v2/models/{m}        the model's v2 tensors (oip_v2.metadata), read from the .mar it serves
GET /v2/models/{m}/ready  200 {"name", "ready": true} once all the model's workers are READY
                          (TorchServe's management API), else 503 {"name", "ready": false, "error"}

TorchServe 0.12's frontend answers 404 to both and never passes them to a worker, and an endpoint
plugin would have to claim the whole `v2` prefix, shadowing `/v2/models/{m}/infer`
(docs/contract.md). So this small server answers them on a port of its own, with TorchServe's
token rule: `Authorization: Bearer <inference key>` (key_file.json, unexpired), else TorchServe's
own 400; a model TorchServe does not serve gets TorchServe's own 404.

Standard library only (oip_v2 is too), so the container's stdlib-only entrypoint can serve the
same routes: a threading `http.server` is enough for two GET routes, and needs no framework.
python -m serve.v2_metadata --address http://127.0.0.1:8084 --management URL --store DIR
                            [--key-file key_file.json]
"""

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.message import Message
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional, Union

HERE = Path(__file__).resolve().parent
# oip_v2 declares the tensors: handlers/ in a checkout, beside this file in the image.
_HANDLERS = HERE.parent / "handlers"
if str(_HANDLERS) not in sys.path:
    sys.path.insert(0, str(_HANDLERS if (_HANDLERS / "oip_v2.py").exists() else HERE))
import oip_v2  # noqa: E402

# TorchServe 0.12's answers, word for word (TokenAuthorization, its 404s): a client sees one API.
REFUSED = {
    "code": 400,
    "type": "InvalidKeyException",
    "message": "Token Authorization failed. Token either incorrect, expired, or not provided "
    "correctly",
}
NOT_FOUND = {
    "code": 404,
    "type": "ResourceNotFoundException",
    "message": "Requested resource is not found, please refer to API document.",
}
NOT_ALLOWED = {
    "code": 405,
    "type": "MethodNotAllowedException",
    "message": "Requested method is not allowed, please refer to API document.",
}
# TorchServe's bearer rule (TokenAuthorization.parseTokenFromBearerTokenHeader); Java's \s is
# ASCII whitespace only.
BEARER = re.compile(r"Bearer\s+(\S+)", re.ASCII)
ROUTE = re.compile(r"/v2/models/([^/]+)(/ready)?")
Answer = tuple[int, Any]
# http.server's request headers (case-insensitive), or a plain mapping.
Headers = Union[Message, Mapping[str, str]]


def key(kind: str, key_file: Path) -> Optional[str]:
    """The `kind` key of key_file.json while it is unexpired (TorchServe rewrites the file)."""
    entry = json.loads(Path(key_file).read_text())[kind]
    expires = entry.get("expiration time")
    if expires and datetime.fromisoformat(expires.replace("Z", "+00:00")) <= datetime.now(UTC):
        return None
    return entry["key"]


def authorized(header: Optional[str], key_file: Optional[Path]) -> bool:
    """Whether an Authorization header carries the inference key; always, with tokens off."""
    if key_file is None:
        return True
    found = BEARER.fullmatch((header or "").strip())
    try:
        return found is not None and found[1] == key("inference", key_file)
    except (OSError, ValueError, KeyError):  # no key file yet: TorchServe is still starting
        return False


def get(url: str, token: Optional[str], timeout: float = 10) -> tuple[int, Any]:
    """GETs a URL of TorchServe's; (status, parsed JSON)."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def workers_problem(described: Mapping[str, Any]) -> Optional[str]:
    """Why a described model (management API) cannot answer; None once all its minWorkers
    (and every worker it has) are READY (a worker is READY once its initialize returned)."""
    workers = described.get("workers", [])
    wanted = max(int(described.get("minWorkers", 1)), 1, len(workers))
    ready = sum(w.get("status") == "READY" for w in workers)
    return None if ready >= wanted else f"{ready}/{wanted} workers READY"


@lru_cache(maxsize=64)
def declarations(mar: Path, mtime_ns: int) -> tuple[str, dict[str, Any], str]:
    """(oip_v2 kind, meta.json, version) from a .mar's manifest, handler source and meta.json
    (a .mar is a zip; TorchServe also serves a folder holding an unpacked one)."""
    if mar.is_dir():
        return _declared(lambda member: (mar / member).read_bytes())
    with zipfile.ZipFile(mar) as z:
        return _declared(z.read)


def _declared(read: Callable[[str], bytes]) -> tuple[str, dict[str, Any], str]:
    manifest = json.loads(read("MAR-INF/MANIFEST.json"))["model"]
    source = read(manifest["handler"].split(":")[0]).decode()
    meta = json.loads(read("meta.json"))
    return oip_v2.kind_for_source(source), meta, str(manifest.get("modelVersion", ""))


class V2Metadata:
    """The two routes over one TorchServe: its management API, key file and model store."""

    def __init__(self, management: str, store: Path, key_file: Optional[Path]) -> None:
        self.management, self.store, self.key_file = management.rstrip("/"), store, key_file

    def describe(self, name: str) -> Answer:
        """TorchServe's description of the model's default version, or its own error."""
        tok = key("management", self.key_file) if self.key_file is not None else None
        status, body = get(f"{self.management}/models/{urllib.parse.quote(name)}", tok)
        return (status, body[0]) if status == 200 and body else (status, body)

    def metadata(self, name: str) -> Answer:
        status, described = self.describe(name)
        if status != 200:
            return status, described
        url = described.get("modelUrl", f"{name}.mar").removeprefix("file://")
        mar = self.store / url if not Path(url).is_absolute() else Path(url)
        kind, meta, version = declarations(mar, mar.stat().st_mtime_ns)
        version = str(described.get("modelVersion") or version)  # what TorchServe serves
        return 200, oip_v2.metadata(kind, meta, name, version)

    def ready(self, name: str) -> Answer:
        status, described = self.describe(name)
        if status != 200:
            return status, described
        problem = workers_problem(described)
        if problem:
            return 503, {"name": name, "ready": False, "error": problem}
        return 200, {"name": name, "ready": True}

    def answer(self, path: str, headers: Headers) -> Optional[Answer]:
        """The answer to GET `path`, or None when it is no v2 route (for another server's)."""
        path = urllib.parse.urlsplit(path).path
        if not path.startswith("/v2/"):
            return None
        if not authorized(headers.get("Authorization"), self.key_file):
            return 400, REFUSED  # TorchServe checks the token before it routes
        route = ROUTE.fullmatch(path)
        if route is None:
            return 404, NOT_FOUND
        name = urllib.parse.unquote(route[1])
        try:
            return self.ready(name) if route[2] else self.metadata(name)
        except (OSError, ValueError, KeyError) as e:  # TorchServe down, a .mar unreadable
            return 503, {"code": 503, "type": type(e).__name__, "message": str(e)}


def json_server(
    host: str, port: int, answer: Callable[[str, Headers], Answer]
) -> ThreadingHTTPServer:
    """A server answering every GET with `answer(path, headers)` as JSON; other methods 405."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.reply(*answer(self.path, self.headers))

        def __getattr__(self, name: str) -> Any:
            # Every other method (POST, HEAD, TRACE, ...): a JSON 405, not http.server's HTML 501.
            if name.startswith("do_"):
                return lambda: self.reply(405, NOT_ALLOWED)
            raise AttributeError(name)

        def reply(self, status: int, body: Any) -> None:
            raw = json.dumps(body).encode() + b"\n"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass  # probes and clients polling readiness would flood the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="http://HOST:PORT to listen on")
    parser.add_argument("--management", required=True, help="TorchServe's management URL")
    parser.add_argument("--store", type=Path, required=True, help="TorchServe's model store")
    parser.add_argument("--key-file", type=Path, help="key_file.json (absent: tokens off)")
    args = parser.parse_args(argv)
    where = urllib.parse.urlsplit(args.address)
    routes = V2Metadata(args.management, args.store.resolve(), args.key_file)
    server = json_server(
        where.hostname or "127.0.0.1",
        where.port or 8084,
        lambda path, headers: routes.answer(path, headers) or (404, NOT_FOUND),
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
