"""The alert rules as Prometheus's own tool sees them: valid, and passing their unit tests
(deploy/prometheus/alerts_test.yml: each alert fired by series that should fire it, and silent
on series that should not)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.helpers.prometheus import (
    REPO,
    RULE_TESTS,
    RULES,
    dashboard_expressions,
    require_prometheus_tools,
)

# Grafana's interval variables, as a query of the dashboard sees them substituted.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "30m", "$__interval": "15s"}


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


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_expressions()
    assert queries
    rules = []
    for number, query in enumerate(queries):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        rules.append({"record": f"dashboard:query_{number}", "expr": query})
    checked_file = tmp_path / "dashboard_queries.yml"
    checked_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(checked_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
