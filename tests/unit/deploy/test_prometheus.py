"""deploy/prometheus/: the scrape config and alert rules pass promtool's checks, the rules pass
their unit tests on synthetic series, and the config scrapes what the bundle serves."""

import shutil
import subprocess

import pytest
import yaml

from serve import prometheus
from serve.config import CONFIG, read_properties

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: scripts/ensure_prometheus.sh (make test runs it)"
)


def promtool(*args: str, cwd=prometheus.PROM_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_rules_and_config_pass_promtool_check():
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 6 rules found" in rules.stdout
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


@needs_promtool
def test_alert_rules_pass_their_promtool_unit_tests():
    run = promtool("test", "rules", "alerts_test.yml")
    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
def test_every_alert_has_a_unit_test_that_expects_it_to_fire():
    rules = yaml.safe_load(prometheus.RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((prometheus.PROM_DIR / "alerts_test.yml").read_text())["tests"]
    fired = {
        t["alertname"]
        for case in tests
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    assert fired == alerts


@needs_promtool
def test_a_rendered_config_for_other_ports_is_valid(tmp_path):
    cfg = prometheus.render(
        {"torchserve": "http://127.0.0.1:40001", "monitor": "http://127.0.0.1:40002"}, "1s"
    )
    assert prometheus.scrape_targets(cfg) == [
        "torchserve=127.0.0.1:40001",
        "monitor=127.0.0.1:40002",
    ]
    assert cfg["global"]["scrape_interval"] == "1s"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    run = promtool("check", "config", str(tmp_path / "prometheus.yml"), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    with pytest.raises(KeyError, match="no scrape job"):
        prometheus.render({"grafana": "http://127.0.0.1:3000"})


def test_the_checked_in_config_scrapes_make_serves_metrics_address():
    metrics = prometheus.host_port(read_properties(CONFIG)["metrics_address"])
    assert "torchserve=" + metrics in prometheus.scrape_targets()
    assert "monitor=127.0.0.1:8083" in prometheus.scrape_targets()
