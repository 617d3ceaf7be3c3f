"""make bench-memory (benchmarks/container_memory.py): the cgroup figures and the limit it sets."""

from benchmarks.container_memory import GIB, read, recommend

MIB = 2**20


def test_the_limit_is_the_peak_with_headroom_rounded_up_to_half_a_gib():
    assert recommend(1000 * MIB, 1.25) == "1.5Gi"  # 1,250 MiB
    assert recommend(1600 * MIB, 1.25) == "2Gi"  # 2,000 MiB
    assert recommend(2 * GIB, 1.25) == "2.5Gi"
    assert recommend(3 * GIB, 1.0) == "3Gi"


def test_working_set_leaves_out_the_inactive_file_cache_on_cgroup_v1_and_v2(tmp_path):
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.usage_in_bytes").write_text(f"{900 * MIB}\n")
    (v1 / "memory.max_usage_in_bytes").write_text(f"{1000 * MIB}\n")
    stat = {"total_inactive_file": 300, "total_rss": 500, "total_shmem": 80, "cache": 400}
    (v1 / "memory.stat").write_text("".join(f"{k} {v * MIB}\n" for k, v in stat.items()))
    assert read(v1) == {
        "usage": 900 * MIB,
        "working_set": 600 * MIB,
        "rss": 500 * MIB,
        "shmem": 80 * MIB,
        "kernel_peak": 1000 * MIB,
    }
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.current").write_text(f"{700 * MIB}\n")
    (v2 / "memory.peak").write_text(f"{800 * MIB}\n")
    stat = {"anon": 400, "inactive_file": 200, "shmem": 50}
    (v2 / "memory.stat").write_text("".join(f"{k} {v * MIB}\n" for k, v in stat.items()))
    assert read(v2)["working_set"] == 500 * MIB and read(v2)["kernel_peak"] == 800 * MIB
