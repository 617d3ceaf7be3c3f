"""benchmarks/clients.py: what the closed-loop clients send, against a real local HTTP server."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchmarks.clients import closed_loop


def test_closed_loop_posts_carry_the_content_type_and_the_token():
    seen: list[tuple[str, str]] = []

    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.headers.get("Content-Type"), self.headers.get("Authorization")))
            self.send_response(200 if self.headers.get("Content-Type") == "text/plain" else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        done = closed_loop(base, "/predictions/m", [b"a review"], "text/plain", 2, 0.3, tok="k")
    finally:
        server.shutdown()
    assert done["ok"] > 0 and done["err"] == 0, done["codes"]
    assert set(seen) == {("text/plain", "Bearer k")}
