"""Step load shape: holds each user count of --steps for --step-seconds, then stops.

Locust uses a shape class whenever one is loaded, so the shape lives in its own file and is
opted into by listing it after the locustfile:

    locust -f loadtests/locustfile.py,loadtests/step_shape.py --headless \\
        --steps 1,2,4,8,16,32 --step-seconds 30 --host http://127.0.0.1:8080
"""

from typing import Any, Optional

from locust import LoadTestShape, events


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument("--steps", default="1,2,4,8,16,32", help="user counts, one per step")
    parser.add_argument("--step-seconds", type=float, default=30.0, help="length of each step")


class StepShape(LoadTestShape):
    """1, 2, 4, ... users, each for the same time; every step's users start at once."""

    def tick(self) -> Optional[tuple[int, float]]:
        opts = self.runner.environment.parsed_options
        steps = [int(s) for s in opts.steps.split(",") if s.strip()]
        step = int(self.get_run_time() // opts.step_seconds)
        if step >= len(steps):
            return None
        return steps[step], float(max(steps[step], 1))
