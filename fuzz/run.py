"""Sends fuzz cases from concurrent clients to a real torchserve and judges every answer.

A run holds when: no 5xx and no connection failure; every 4xx carries a JSON error body that
names its field (the handlers' `{"code", "field", "error"}`, or TorchServe's own `{"code",
"type", "message"}` for what its frontend refuses before a worker sees it); every known-good
request got the same answer as when it was sent alone (status, labels, numbers within 1e-4);
and no worker restarted, by the workers' PIDs and by TorchServe's own logs.
"""

import re
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

import requests

from fuzz.cases import Case
from serve.server import Server

TOLERANCE = 1e-4  # padding in a batch may move the last printed digit
# TorchServe 0.12's netty form decoder throws on a malformed multipart or urlencoded body and
# its catch-all answered 500 (pytorch/serve #1819); the bundle's frontend fix makes those 400
# (serve/frontend_patch.py), so a run allows no 5xx at all.
# What TorchServe logs when a worker process ends or is restarted.
RESTART_LOG = re.compile(
    r"Backend worker process died|Worker disconnected|Retry worker|WORKER_STOPPED"
)


@dataclass
class Answer:
    status: int  # 0: the connection failed
    body: Any
    seconds: float


@dataclass
class Report:
    """Counts per model and family, and the first failures of each kind."""

    sent: int = 0
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    fields: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[dict[str, Any]] = field(default_factory=list)
    failure_kinds: Counter = field(default_factory=Counter)

    def fail(self, kind: str, case: Case, answer: Answer) -> None:
        self.failure_kinds[kind] += 1
        if sum(1 for f in self.failures if f["kind"] == kind) < 5:
            self.failures.append(
                {
                    "kind": kind,
                    "model": case.model,
                    "family": case.family,
                    "case": case.note,
                    "content_type": case.content_type,
                    "body_head": case.body[:120].decode("utf-8", "replace"),
                    "status": answer.status,
                    "answer": str(answer.body)[:300],
                }
            )


def same(a: Any, b: Any, tol: float = TOLERANCE) -> bool:
    """Equal JSON, numbers within tol."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= tol
    return a == b


def error_kind(status: int, body: Any) -> Optional[str]:
    """'handler' or 'frontend' for a well-formed 4xx error body, None for anything else."""
    if not isinstance(body, dict) or body.get("code") != status:
        return None
    if isinstance(body.get("field"), str) and body["field"] and isinstance(body.get("error"), str):
        return "handler"
    if isinstance(body.get("message"), str) and isinstance(body.get("type"), str):
        return "frontend"
    return None


class Client:
    """One keep-alive session per thread, as a real client pool would hold."""

    def __init__(self, server: Server, timeout_s: float = 60) -> None:
        self.server, self.timeout_s = server, timeout_s
        self.local = threading.local()
        self.token = server.token()

    def send(self, case: Case) -> Answer:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        headers = {"Authorization": f"Bearer {self.token}"}
        if case.content_type:
            headers["Content-Type"] = case.content_type
        started = time.perf_counter()
        try:
            resp = session.post(
                f"{self.server.inference}/predictions/{case.model}",
                data=case.body,
                headers=headers,
                timeout=self.timeout_s,
            )
        except requests.RequestException as e:
            self.local.session = None
            return Answer(0, f"{type(e).__name__}: {e}", time.perf_counter() - started)
        try:
            body: Any = resp.json()
        except ValueError:
            body = resp.text
        return Answer(resp.status_code, body, time.perf_counter() - started)


def worker_pids(server: Server, models: list[str]) -> dict[str, list[int]]:
    """Each model's worker PIDs, from the management API."""
    client = server.client()
    return {m: sorted(int(w["pid"]) for w in client.describe(m)["workers"]) for m in models}


def restart_lines(server: Server) -> list[str]:
    """TorchServe's log lines that say a worker died or was restarted."""
    lines = []
    for path in sorted(server.log_dir.glob("*.log")):
        with open(path, errors="replace") as f:
            lines += [ln.strip()[:200] for ln in f if RESTART_LOG.search(ln)]
    return lines


def run(server: Server, cases: list[Case], clients: int = 8) -> dict[str, Any]:
    """Sends `cases` from `clients` threads; returns the report as a JSON-able dict."""
    client = Client(server)
    models = sorted({c.model for c in cases})
    goods = {c.model: c for c in cases if c.family == "good"}
    baseline = {m: client.send(goods[m]) for m in models}
    for m, answer in baseline.items():
        if answer.status != 200:
            raise RuntimeError(f"{m}: the known-good example got {answer.status}: {answer.body}")
    pids_before = worker_pids(server, models)
    log_before = len(restart_lines(server))
    report = Report()
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(client.send, cases))
    seconds = time.monotonic() - started
    for case, answer in zip(cases, answers):
        report.sent += 1
        bucket = "conn_fail" if answer.status == 0 else f"{answer.status // 100}xx"
        report.counts[case.model][bucket] += 1
        report.counts[f"family:{case.family}"][bucket] += 1
        if answer.status == 0:
            report.fail("connection", case, answer)
        elif answer.status >= 500:
            report.fail("5xx", case, answer)
        elif case.family == "good":
            ref = baseline[case.model]
            if answer.status != ref.status or not same(answer.body, ref.body):
                report.fail("good answer changed", case, answer)
        elif answer.status >= 400:
            kind = error_kind(answer.status, answer.body)
            if kind is None:
                report.fail("4xx without a JSON error naming the field", case, answer)
            else:
                name = answer.body["field"] if kind == "handler" else f"frontend {answer.status}"
                report.fields[case.model][name] += 1
    pids_after = worker_pids(server, models)
    new_log = restart_lines(server)[log_before:]
    restarts = {m: pids_before[m] != pids_after[m] for m in models}
    latencies = sorted(a.seconds for a in answers)
    return {
        "requests": report.sent,
        "clients": clients,
        "seconds": round(seconds, 1),
        "requests_per_s": round(report.sent / seconds, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
        "totals": dict(
            sum((c for k, c in report.counts.items() if not k.startswith("family:")), Counter())
        ),
        "per_model": {
            k: dict(v) for k, v in sorted(report.counts.items()) if not k.startswith("family:")
        },
        "per_family": {
            k[7:]: dict(v) for k, v in sorted(report.counts.items()) if k.startswith("family:")
        },
        "good_checked": sum(1 for c in cases if c.family == "good"),
        "fields_named": {m: dict(c.most_common()) for m, c in sorted(report.fields.items())},
        "failure_counts": dict(report.failure_kinds),
        "failures": report.failures,
        "workers_restarted": sorted(m for m, changed in restarts.items() if changed),
        "restart_log_lines": new_log[:20],
        "worker_pids": pids_after,
    }


def held(result: dict[str, Any]) -> bool:
    """Whether a run met every goal."""
    return (
        not result["failure_counts"]
        and not result["workers_restarted"]
        and not result["restart_log_lines"]
    )
