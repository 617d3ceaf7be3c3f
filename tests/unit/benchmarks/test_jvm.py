"""The soak's reading of the frontend JVM: its GC log and Native Memory Tracking summary."""

import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import jvm
from serve.config import CONFIG, read_properties

GC_LOG = """\
[0.011s] Using G1
[5.102s] GC(0) Pause Young (Normal) (G1 Evacuation Pause) 25M->6M(512M) 4.201ms
[61.237s] GC(12) Pause Young (Normal) (G1 Evacuation Pause) 187M->41M(512M) 3.101ms
[90.500s] GC(13) Pause Young (Concurrent Start) (G1 Humongous Allocation) 190M->44M(512M) 2.9ms
[120.002s] GC(14) Pause Remark 60M->47M(512M) 1.001ms
[121.010s] GC(14) Concurrent Mark Cycle 10.2ms
[150.000s] GC(15) Pause Young (Normal) (G1 Evacuation Pause) 200M->50M(512M) 3.0ms
"""


def test_the_gc_log_gives_the_heap_after_every_pause_and_its_slope(tmp_path):
    log = tmp_path / "gc.log"
    log.write_text(GC_LOG)
    assert jvm.heap_after_gc(log) == [
        (5.102, 6),
        (61.237, 41),
        (90.5, 44),
        (120.002, 47),
        (150.0, 50),
    ]
    # 41 -> 50 MiB from 61 s to 150 s: about 6 MiB a minute; the warm-up pause is left out.
    out = jvm.summary(log, 60.0, None, None, 1.5)
    assert out["gc_pauses"] == 5 and out["gc_pauses_after_warmup"] == 4
    assert out["heap_after_gc_mib_first_last"] == [41, 50]
    assert out["heap_after_gc_slope_mib_per_min"] == pytest.approx(6.0, abs=0.3)
    assert jvm.heap_after_gc(tmp_path / "absent.log") == []


# A JVM that makes garbage (so G1 pauses) and then waits to be read by jcmd.
CHURN = """
public class Churn {
    public static void main(String[] args) throws Exception {
        for (int i = 0; i < 400; i++) { byte[] b = new byte[1 << 20]; b[0] = (byte) i; }
        System.out.println("ready");
        Thread.sleep(60_000);
    }
}
"""


@pytest.mark.skipif(jvm.JCMD is None or shutil.which("javac") is None, reason="needs a JDK")
def test_a_live_jvm_is_read_by_category_and_its_gc_log_parsed(tmp_path):
    (tmp_path / "Churn.java").write_text(CHURN)
    gc_log = tmp_path / "gc.log"
    flags = ["-Xmx64m", "-XX:NativeMemoryTracking=summary", f"-Xlog:gc:file={gc_log}:uptime"]
    proc = subprocess.Popen(
        ["java", *flags, str(tmp_path / "Churn.java")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        found = jvm.native_memory(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert found is not None
    assert found["Java Heap"] > 0 and found["Code"] > 0 and "Metaspace" in found
    pauses = jvm.heap_after_gc(gc_log)
    assert pauses, gc_log.read_text()  # 400 MiB through a 64 MiB heap: G1 must have paused
    assert all(0 <= after <= 64 for _, after in pauses)


def test_native_memory_growth_is_per_category_and_per_minute(tmp_path):
    warm = {"Java Heap": 512.0, "Code": 16.0, "Metaspace": 21.0}
    later = {**warm, "Code": 26.0, "Metaspace": 21.01}
    out = jvm.summary(tmp_path / "gc.log", 0.0, warm, later, 5.0)
    assert out["nmt_growth_mib_per_min"] == {"Code": 2.0}  # changes under 0.05 MiB left out


def test_the_diagnostic_config_keeps_the_bundles_vmargs_and_adds_tracking(tmp_path):
    dest = jvm.diagnostic_config(CONFIG, tmp_path / "soak.properties", tmp_path / "gc.log")
    vmargs = read_properties(dest)["vmargs"]
    assert vmargs.startswith(read_properties(CONFIG)["vmargs"])
    assert "-XX:NativeMemoryTracking=summary" in vmargs
    assert f"-Xlog:gc:file={tmp_path / 'gc.log'}:uptime" in vmargs
    # The copy lives elsewhere: the metrics config it names must still be the bundle's file.
    metrics = Path(read_properties(dest)["metrics_config"])
    assert metrics.is_absolute() and metrics == (CONFIG.parent / "metrics.yaml").resolve()
    assert metrics.exists()
