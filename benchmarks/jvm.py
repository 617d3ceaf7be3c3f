"""What the frontend JVM's memory is made of over a run: its heap after each collection (the GC
log) and its native memory by category (Native Memory Tracking, read with `jcmd`).

An RSS line alone cannot tell a leak from a heap that G1 is still committing towards `-Xmx`,
or from the JIT's code cache filling; these two can (`make soak`, docs/reliability.md §4).
"""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import slope_per_min
from serve.config import read_properties, write_properties

# Unified JVM logging (`-Xlog:gc:file=...:uptime`) writes one line per pause, e.g.
# "[61.237s] GC(12) Pause Young (Normal) (G1 Evacuation Pause) 187M->41M(512M) 3.101ms".
# The JVM ships no machine-readable form of it and no Python library parses it, so a pattern.
PAUSE = re.compile(r"^\[(?P<t>\d+(?:\.\d+)?)s\].*\bPause\b.* (?P<before>\d+)M->(?P<after>\d+)M\(")
# `jcmd PID VM.native_memory summary` prints "-  Code (reserved=250396KB, committed=16444KB)".
NMT_LINE = re.compile(r"^-\s+(?P<name>[\w ]+?) \(reserved=\d+KB, committed=(?P<kb>\d+)KB")
JCMD = shutil.which("jcmd")


def diagnostic_config(src: Path, dest: Path, gc_log: Path) -> Path:
    """A copy of `src` whose vmargs also turn on Native Memory Tracking and a GC log."""
    props = read_properties(src)
    extra = f"-XX:NativeMemoryTracking=summary -Xlog:gc:file={gc_log}:uptime"
    overrides = {"vmargs": f"{props.get('vmargs', '')} {extra}".strip()}
    if props.get("metrics_config"):  # relative to src's folder, which the copy is not in
        overrides["metrics_config"] = str((Path(src).parent / props["metrics_config"]).resolve())
    write_properties(src, dest, overrides)
    return dest


def heap_after_gc(gc_log: Path) -> list[tuple[float, float]]:
    """(JVM uptime s, heap MiB left after the pause) for every pause in the GC log."""
    if not gc_log.exists():
        return []
    found = (PAUSE.match(line) for line in gc_log.read_text().splitlines())
    return [(float(m["t"]), float(m["after"])) for m in found if m]


def native_memory(pid: int) -> Optional[dict[str, float]]:
    """Committed MiB per NMT category ("Java Heap", "Code", "Class", ...), or None without it."""
    if JCMD is None:
        return None
    done = subprocess.run(
        [JCMD, str(pid), "VM.native_memory", "summary"], capture_output=True, text=True, timeout=60
    )
    rows = (NMT_LINE.match(line.strip()) for line in done.stdout.splitlines())
    found = {m["name"].strip(): int(m["kb"]) / 1024 for m in rows if m}
    return found or None


def summary(
    gc_log: Path, warm_uptime_s: float, nmt_warm: Optional[dict[str, float]],
    nmt_end: Optional[dict[str, float]], minutes: float,
) -> dict[str, Any]:  # fmt: skip
    """The JVM part of the soak's results: heap-after-GC slope and NMT growth per category."""
    pauses = heap_after_gc(gc_log)
    later = [v for t, v in pauses if t >= warm_uptime_s]
    growth = None
    if nmt_warm and nmt_end and minutes > 0:
        growth = {
            k: round((nmt_end[k] - nmt_warm.get(k, 0.0)) / minutes, 3)
            for k in nmt_end
            if abs(nmt_end[k] - nmt_warm.get(k, 0.0)) >= 0.05
        }
    return {
        "gc_pauses": len(pauses),
        "gc_pauses_after_warmup": len(later),
        "heap_after_gc_mib_first_last": [later[0], later[-1]] if later else None,
        "heap_after_gc_slope_mib_per_min": slope_per_min(pauses, warm_uptime_s),
        "nmt_committed_mib_after_warmup": nmt_warm,
        "nmt_committed_mib_end": nmt_end,
        "nmt_growth_mib_per_min": growth,
    }
