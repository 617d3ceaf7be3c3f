"""Schema-driven fuzzing: schemathesis generates requests from docs/openapi.json.

schemathesis (kept by others, it knows every declared field) runs against a live server with
the inference token and checks that no response is a server error and that every documented
response matches its schema. Its exit code and the tail of its report are returned.
"""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from serve.server import Server

OPENAPI = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
CHECKS = "not_a_server_error,response_schema_conformance"


# Operations on the v2 metadata server beside TorchServe (serve/v2_metadata.py), not port 8080.
V2_METADATA_TAG = "v2-metadata"


def st_command(url: str, token: str, max_examples: int, seed: int, tags: list[str]) -> list[str]:
    """`st run` over docs/openapi.json against `url`, with `tags` (e.g. --include-tag X)."""
    cli = Path(sys.executable).with_name("st")
    return [
        str(cli),
        "--no-color",
        "run",
        str(OPENAPI),
        "--url",
        url,
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        *tags,
    ]


def failures_section(lines: list[str], most: int = 120) -> list[str]:
    """The report's FAILURES section (each failure, its response and its curl), cut to `most`."""
    starts = [i for i, line in enumerate(lines) if line.strip("= ") == "FAILURES"]
    if not starts:
        return []
    ends = [i for i, line in enumerate(lines) if line.strip("= ") in ("WARNINGS", "SUMMARY")]
    end = min([i for i in ends if i > starts[0]] or [len(lines)])
    return lines[starts[0] : min(end, starts[0] + most)]


def run_schemathesis(server: Server, max_examples: int, seed: int = 0) -> dict[str, Any]:
    """`st run` over every operation of the OpenAPI document, `max_examples` each: TorchServe's
    on its inference port, the v2 metadata routes on the metadata server."""
    token = server.token() or ""
    runs = [(server.inference, ["--exclude-tag", V2_METADATA_TAG])]
    if server.v2:
        runs.append((server.v2, ["--include-tag", V2_METADATA_TAG]))
    codes, report, shown, tail = [], "", [], []
    for url, tags in runs:
        cmd = st_command(url, token, max_examples, seed, tags)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        codes.append(out.returncode)
        report += out.stdout + out.stderr
        lines = (out.stdout + out.stderr).strip().splitlines()
        tail += failures_section(lines) + lines[-60 // len(runs) :]
        shown.append(" ".join(["st", *cmd[1:6], "--header", "'Authorization: Bearer <token>'"]))
        shown[-1] += " " + " ".join(cmd[8:])
    report = report.replace(token or "\0", "<token>")
    failures: dict[str, int] = {}
    for code, count in re.findall(r"❌ (ST\d+) [^:\n]*: (\d+)", report):
        failures[code] = failures.get(code, 0) + int(count)
    return {
        "failures": failures,
        "held": all(c == 0 for c in codes),
        "command": "; ".join(shown),
        "exit_code": max(codes),
        "report_tail": [line.replace(token or "\0", "<token>") for line in tail],
    }
