"""The alert rules as Prometheus's own tool sees them: valid, and passing their unit tests
(deploy/prometheus/alerts_test.yml: each alert fired by series that should fire it, and silent
on series that should not)."""

from __future__ import annotations

import subprocess

import yaml

from tests.helpers.prometheus import REPO, RULE_TESTS, RULES, require_prometheus_tools


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tools = require_prometheus_tools()
    return subprocess.run(
        [tools.promtool, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_rules_and_the_scrape_config_are_valid() -> None:
    for args in (
        ("check", "rules", str(RULES)),
        ("check", "config", str(REPO / "deploy" / "prometheus" / "prometheus.yml")),
    ):
        checked = promtool(*args)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_alert_fires_on_the_series_that_should_fire_it_and_only_those() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_case_that_fires_it_and_one_that_does_not() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    silent = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert alerts - fired == set(), "alerts no test fires"
    assert alerts - silent == set(), "alerts no test shows silent"
