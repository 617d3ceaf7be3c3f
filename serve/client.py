"""Talking to a torchserve: its tokens, HTTP with a token, and the management API."""

import ipaddress
import json
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any, Optional

from serve.config import ROOT

KEY_FILE = ROOT / "key_file.json"


def token(kind: str = "inference", key_file: Path = KEY_FILE) -> str:
    """The inference or management token that TorchServe wrote to key_file.json at start-up."""
    return json.loads(Path(key_file).read_text())[kind]["key"]


def is_loopback(url: str) -> bool:
    """True when a URL (or a bare host) names this machine: localhost, 127.0.0.0/8 or ::1."""
    host = urllib.parse.urlsplit(url if "//" in url else f"//{url}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_token(host: str, key_file: Path = KEY_FILE) -> str:
    """The local inference token for `host`, or "" when host is another machine.

    The key file belongs to the torchserve on this machine: sending its token to any other
    host would hand a secret to whoever runs it (`make loadtest HOST=...`).
    """
    if not is_loopback(host) or not Path(key_file).exists():
        return ""
    return token("inference", key_file)


def exchange(
    url: str,
    tok: Optional[str] = None,
    method: str = "GET",
    body: bytes | None = None,
    headers: Optional[dict[str, str]] = None,
    timeout: float = 30,
) -> tuple[int, bytes, Message]:
    """Sends one request; returns (status, body, headers) for any HTTP status."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if tok:
        req.add_header("Authorization", f"Bearer {tok}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def http(url: str, tok: Optional[str] = None, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
    """exchange() without the response headers: (status, body) for any HTTP status."""
    status, data, _ = exchange(url, tok, *args, **kwargs)
    return status, data


def parsed(body: bytes) -> Any:
    """A response body as JSON, or as text when it is not JSON (TorchServe's own errors)."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


class ManagementClient:
    """The management API of one running torchserve, with the token from its key_file.json.

    `key_file=None` is a server started with token authorization off.
    """

    def __init__(self, url: str, key_file: str | Path | None, timeout_s: float = 300) -> None:
        self.url = url.rstrip("/")
        self.key_file = Path(key_file) if key_file is not None else None
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200,)) -> Any:
        """One management request; RuntimeError with TorchServe's answer on another status."""
        # Read the token on every call: TorchServe rewrites key_file.json at each start.
        tok = token("management", self.key_file) if self.key_file is not None else None
        status, body = http(f"{self.url}{path}", tok, method=method, timeout=self.timeout_s)
        if status not in ok:
            raise RuntimeError(f"{method} {path} -> {status}: {body.decode(errors='replace')}")
        return json.loads(body) if body.strip() else None

    def models(self) -> list[str]:
        """The names of every registered model."""
        return sorted(m["modelName"] for m in self.call("GET", "/models")["models"])

    def describe(self, model: str) -> dict[str, Any]:
        """GET /models/<name>: the default version's batching, workers and their status."""
        return self.call("GET", f"/models/{model}")[0]

    def versions(self, model: str) -> dict[str, bool]:
        """{version: is_default} of a registered model; {} when it is not registered."""
        try:
            described = self.call("GET", f"/models/{model}/all")
        except RuntimeError as e:
            if "-> 404" in str(e):
                return {}
            raise
        # TorchServe marks the default version only in the list of /models/<name>.
        out = {str(d["modelVersion"]): False for d in described}
        out[str(self.describe(model)["modelVersion"])] = True
        return out

    def register(self, mar_name: str, initial_workers: Optional[int] = None, **params: Any) -> None:
        """Registers a .mar of the server's model store and waits for its workers.

        `params` are the API's own query parameters (model_name, batch_size, max_batch_delay).
        """
        query: dict[str, Any] = {"url": mar_name, **params, "synchronous": "true"}
        if initial_workers is not None:
            query["initial_workers"] = initial_workers
        self.call("POST", f"/models?{urllib.parse.urlencode(query)}")

    def scale(self, model: str, workers: int) -> None:
        """Sets min and max workers of a model and waits until they run."""
        query = urllib.parse.urlencode(
            {"min_worker": workers, "max_worker": workers, "synchronous": "true"}
        )
        self.call("PUT", f"/models/{model}?{query}")

    def set_default(self, model: str, version: str) -> None:
        self.call("PUT", f"/models/{model}/{version}/set-default")

    def unregister(self, model: str, version: Optional[str] = None) -> None:
        """Unregisters one version, or the model's default version when none is given."""
        self.call("DELETE", f"/models/{model}" + (f"/{version}" if version else ""))
