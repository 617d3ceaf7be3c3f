"""Closed-loop HTTP clients for the served side of the benchmarks: keep-alive connections that
post one request after another, in threads (make bench) or in processes of threads (GPU)."""

import http.client as httpclient
import multiprocessing as mp
import threading
import time
from typing import Any, Optional

from benchmarks.common import percentile


class Client:
    """One keep-alive HTTP connection posting a body to one path."""

    def __init__(
        self, base: str, path: str, body: Optional[bytes], ctype: str, tok: Optional[str] = None
    ) -> None:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.conn = httpclient.HTTPConnection(self.host, self.port, timeout=120)
        self.path, self.body = path, body
        self.headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        # Every POST carries the Content-Type, also when the body comes with each post()
        # (closed_loop): without it the text model read a plain-text review as JSON (400).
        self.post_headers = {**self.headers, "Content-Type": ctype} if ctype else self.headers

    def post(self, body: Optional[bytes] = None) -> int:
        """One request (GET when there is no body: /ping); -1 when the connection failed."""
        body = self.body if body is None else body
        try:
            if body is None:
                self.conn.request("GET", self.path, headers=self.headers)
            else:
                self.conn.request("POST", self.path, body=body, headers=self.post_headers)
            resp = self.conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, httpclient.HTTPException):
            self.conn.close()
            self.conn = httpclient.HTTPConnection(self.host, self.port, timeout=120)
            return -1


def closed_loop(
    base: str,
    path: str,
    bodies: list[Optional[bytes]],
    ctype: str,
    threads: int,
    seconds: float,
    warmup: float = 0.0,
    tok: Optional[str] = None,
) -> dict[str, Any]:
    """`threads` clients posting round-robin bodies; counts and latencies after the warm-up."""
    t_start = time.perf_counter() + warmup
    stop_at = t_start + seconds
    lock = threading.Lock()
    lat: list[float] = []
    counts: dict[str, Any] = {"ok": 0, "err": 0, "codes": {}}

    def run(k: int) -> None:
        client = Client(base, path, None, ctype, tok)
        i = k
        while (now := time.perf_counter()) < stop_at:
            code = client.post(bodies[i % len(bodies)] if bodies[0] is not None else None)
            i += 7
            end = time.perf_counter()
            if now >= t_start and end <= stop_at:
                with lock:
                    if code == 200:
                        counts["ok"] += 1
                        lat.append(end - now)
                    else:
                        counts["err"] += 1
                        counts["codes"][code] = counts["codes"].get(code, 0) + 1

    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {**counts, "lat": lat}


def _proc(queue: Any, *args: Any) -> None:
    queue.put(closed_loop(*args))


def many_processes(
    base: str,
    path: str,
    bodies: list[Optional[bytes]],
    ctype: str,
    users: int,
    procs: int,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    """`users` clients spread over `procs` forked processes (one Python cannot drive them all)."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    per = [users // procs + (1 if i < users % procs else 0) for i in range(procs)]
    ps = [
        ctx.Process(target=_proc, args=(queue, base, path, bodies, ctype, n, seconds, warmup))
        for n in per
        if n
    ]
    for p in ps:
        p.start()
    results = [queue.get(timeout=warmup + seconds + 300) for _ in ps]
    for p in ps:
        p.join()
    lat = [x * 1000 for r in results for x in r["lat"]]
    ok = sum(r["ok"] for r in results)
    codes: dict[str, int] = {}
    for r in results:
        for c, n in r["codes"].items():
            codes[str(c)] = codes.get(str(c), 0) + n
    pct = {q: round(percentile(lat, q), 1) if lat else float("nan") for q in (50, 95, 99)}
    return {
        "users": users,
        "client_processes": len(ps),
        "seconds": seconds,
        "ok": ok,
        "errors": sum(r["err"] for r in results),
        "error_codes": codes,
        "rps": round(ok / seconds, 1),
        "p50_ms": pct[50],
        "p95_ms": pct[95],
        "p99_ms": pct[99],
    }
