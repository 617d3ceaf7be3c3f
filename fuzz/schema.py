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


def run_schemathesis(server: Server, max_examples: int, seed: int = 0) -> dict[str, Any]:
    """`st run` over every operation of the OpenAPI document, `max_examples` each."""
    cli = Path(sys.executable).with_name("st")
    cmd = [
        str(cli),
        "--no-color",
        "run",
        str(OPENAPI),
        "--url",
        server.inference,
        "--header",
        f"Authorization: Bearer {server.token()}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    report = (out.stdout + out.stderr).replace(server.token() or "\0", "<token>")
    failures = dict(re.findall(r"❌ (ST\d+) [^:\n]*: (\d+)", report))
    # Server errors that are TorchServe's form decoder (fuzz/run.py FRONTEND_DECODER_5XX): a
    # malformed multipart body is answered 500 by the Java frontend before any worker sees it.
    decoder = report.count("ErrorDataDecoderException")
    only_decoder = set(failures) <= {"ST101"} and int(failures.get("ST101", 0)) <= decoder
    return {
        "failures": failures,
        "held": out.returncode == 0 or (bool(failures) and only_decoder),
        "frontend_decoder_5xx": int(failures.get("ST101", 0)) if only_decoder else 0,
        "command": " ".join(
            ["st", *cmd[1:6], "--header", "'Authorization: Bearer <token>'", *cmd[8:]]
        ),
        "exit_code": out.returncode,
        "report_tail": report.strip().splitlines()[-60:],
    }
