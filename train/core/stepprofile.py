"""StepProfiler: a torch.profiler trace of a few training steps of any family's fit.

make_trainer adds it when the config carries `profile` (`+profile.out=DIR`, as train.profile_train
sets): it skips `wait` steps, warms up one, records `active` steps (data loading of the next batch,
forward, backward, optimiser: everything between two batch ends), writes DIR/trace.json (Chrome
trace, open it in Perfetto) and DIR/top_ops.json (ops by self CPU time), then stops the fit.
"""

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile, schedule


class StepProfiler(L.Callback):
    """Profiles training steps wait+1 .. wait+active of the first fit, then stops it."""

    def __init__(self, out: str | Path, name: str, wait: int = 2, active: int = 5, top: int = 15):
        self.out, self.name = Path(out), name
        self.wait, self.active, self.top = wait, active, top
        self.prof: profile | None = None
        self.steps = 0
        self.ends: list[float] = []
        self.result: dict[str, Any] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.prof is not None or not trainer.is_global_zero:
            return
        self.prof = profile(
            activities=[ProfilerActivity.CPU],
            schedule=schedule(wait=self.wait, warmup=1, active=self.active, repeat=1),
            on_trace_ready=self._write,
        )
        self.prof.start()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self.prof is None or self.result is not None:
            return
        self.steps += 1
        if self.steps >= self.wait + 1:  # the warm-up step's end starts the first active step
            self.ends.append(time.perf_counter())
        self.prof.step()
        if self.result is not None:
            self.prof.stop()
            trainer.should_stop = True

    def _write(self, prof: profile) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.out / "trace.json"))
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events)
        events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
        walls = [b - a for a, b in zip(self.ends, self.ends[1:])]
        self.result = {
            "model": self.name,
            "active_steps": self.active,
            "stopped_after_steps": self.steps,  # of the fit's training steps
            "step_ms": round(1000 * sum(walls) / len(walls), 1) if walls else None,
            "threads": torch.get_num_threads(),
            "self_cpu_ms_per_step": round(total / 1000 / self.active, 1),
            "top": [
                {
                    "op": e.key,
                    "calls_per_step": round(e.count / self.active, 1),
                    "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1000 / self.active, 2),
                    "share": round(e.self_cpu_time_total / total, 3),
                }
                for e in events[: self.top]
            ],
        }
        (self.out / "top_ops.json").write_text(json.dumps(self.result, indent=2) + "\n")
