"""The server settings `make profile` sweeps: torch threads, batching, workers, frontend log."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

# TorchServe's log config with the frontend at WARN (see the file's comment).
QUIET_LOG4J2 = Path(__file__).with_name("quiet_log4j2.xml")


@dataclass(frozen=True)
class Setting:
    """One server configuration to sweep; None keeps the model's committed value."""

    name: str
    what: str
    env: dict[str, str] = field(default_factory=dict)
    batch_size: Optional[int] = None
    max_batch_delay: Optional[int] = None
    workers: Optional[int] = None
    quiet_log: bool = False
    models: tuple[str, ...] = ()  # name prefixes it is worth running for; () = every model

    def server(self) -> tuple:
        """What needs its own torchserve start (the rest is set through the management API)."""
        return tuple(sorted(self.env.items())), self.quiet_log

    def applies(self, model: str) -> bool:
        return not self.models or model.startswith(self.models)


ONE = {"OMP_NUM_THREADS": "1"}
QUIET = "1 thread and a quiet frontend log"
GRAPH = ("cora", "mutag", "qm9")
SETTINGS = [
    Setting("default", "committed config.properties and model-config.yaml"),
    Setting("threads1", "workers run torch on 1 thread (OMP_NUM_THREADS=1)", ONE, models=GRAPH),
    Setting(
        "threads1_quiet",
        "1 thread, and the frontend logs warnings only (TorchServe's own log4j2.xml writes "
        "about ten DEBUG/INFO lines per request, most of them twice)",
        ONE,
        quiet_log=True,
    ),
    Setting(
        "threads1_quiet_batch1",
        f"{QUIET}, batch size 1 (no dynamic batching)",
        ONE,
        batch_size=1,
        max_batch_delay=0,
        quiet_log=True,
        models=GRAPH,
    ),
    Setting(
        "threads1_quiet_delay1",
        f"{QUIET}, max batch delay 1 ms",
        ONE,
        max_batch_delay=1,
        quiet_log=True,
        models=(*GRAPH, "flowers"),
    ),
    Setting("threads1_quiet_workers2", f"{QUIET}, 2 workers per model", ONE, None, None, 2, True),
    # Against the committed (tuned) defaults: maxBatchDelay 1 ms, torch_threads 1 for the
    # graph and QM9 models (model-config.yaml), TorchServe's own log config.
    Setting("delay5", "max batch delay 5 ms (the value before tuning)", max_batch_delay=5),
    Setting(
        "batch1",
        "batch size 1 (no dynamic batching)",
        batch_size=1,
        max_batch_delay=0,
        models=GRAPH,
    ),
    Setting("workers2", "2 workers per model", workers=2),
]
# What `make profile` sweeps unless --settings names others: about 35 minutes for the eight
# models on 2 cores. The threads1* settings (1 torch thread through OMP_NUM_THREADS, a quiet
# frontend log) are what the tuning was chosen from: benchmarks/results/before_tuning/.
DEFAULT_SETTINGS = ("default", "delay5", "batch1", "workers2")
