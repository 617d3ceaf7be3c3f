"""Every request of a run as one CSV row (wall time at the end, endpoint, ms, failed), for
analyses over time that Locust's rolling percentiles cannot give (per-minute p99 of `make soak`).

Opted into by listing it after the locustfile, like the step shape:

    locust -f loadtests/locustfile.py,loadtests/request_log.py --request-log run.csv ...
"""

import csv
import time
from typing import Any, Optional

from locust import events
from locust.runners import MasterRunner

_file: Optional[Any] = None
_writer: Optional[Any] = None


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument("--request-log", default="", help="CSV of every request (end, name, ms)")


@events.test_start.add_listener
def open_log(environment: Any, **_: Any) -> None:
    global _file, _writer
    path = environment.parsed_options.request_log
    if not path or isinstance(environment.runner, MasterRunner):
        return
    _file = open(path, "w", newline="")  # noqa: SIM115 (closed at test_stop)
    _writer = csv.writer(_file)
    _writer.writerow(["end_s", "name", "ms", "failed"])


@events.request.add_listener
def log_request(name: str, response_time: float, exception: Any, **_: Any) -> None:
    if _writer is not None:
        _writer.writerow([f"{time.time():.3f}", name, f"{response_time:.3f}", int(bool(exception))])


@events.test_stop.add_listener
def close_log(**_: Any) -> None:
    global _file, _writer
    if _file is not None:
        _file.close()
    _file = _writer = None
