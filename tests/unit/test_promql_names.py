"""The test helpers that read PromQL and rewrite rules: the metric names an expression
selects, and the fast copy of the alert rules the real-Prometheus test runs."""

from __future__ import annotations

import yaml

from tests.helpers.prometheus import exported_name, fast_rules, metric_names, names_on_metrics_page


def test_only_metric_names_are_taken_from_an_expression() -> None:
    expr = """
      histogram_quantile(0.95, sum by (le, stage) (
        rate(ordergate_order_stage_seconds_bucket{stage=~"risk|pacing"}[$__rate_interval])))
      / on (instance) group_left (broker) max without (pid) (ordergate_breaker_state offset 5m)
      > bool 1e3 and sum(ordergate:order_latency_seconds:p95_1m) or vector(0)
      unless up{job="ordergate"} == 0 or count(rate(x_total[5m])) by (code)
    """
    assert metric_names(expr) == {
        "ordergate_order_stage_seconds_bucket",
        "ordergate_breaker_state",
        "ordergate:order_latency_seconds:p95_1m",
        "up",
        "x_total",
    }


def test_a_histogram_series_is_named_as_its_histogram() -> None:
    assert (
        exported_name("ordergate_order_latency_seconds_bucket") == "ordergate_order_latency_seconds"
    )
    assert (
        exported_name("ordergate_order_latency_seconds_count") == "ordergate_order_latency_seconds"
    )
    assert exported_name("ordergate_orders_total") == "ordergate_orders_total"


def test_families_without_samples_count_as_exported() -> None:
    page = (
        "# HELP ordergate_errors_total Problems answered\n"
        "# TYPE ordergate_errors_total counter\n"
        'ordergate_orders_total{outcome="accepted"} 3.0\n'
        "ordergate_orders_in_flight 0.0\n"
    )
    assert names_on_metrics_page(page) == {
        "ordergate_errors_total",
        "ordergate_orders_total",
        "ordergate_orders_in_flight",
    }


def test_the_fast_rules_keep_expressions_and_thresholds_and_shorten_only_time() -> None:
    rules = """
groups:
  - name: g
    rules:
      - alert: Slow
        expr: histogram_quantile(0.95, sum by (le) (rate(x_bucket[1m]))) > 0.2
        for: 5m
        labels: {severity: warning}
      - alert: Down
        expr: up == 0
        for: 30s
      - record: r
        expr: sum(rate(y[5m])) / sum(rate(z[30s]))
"""
    fast = yaml.safe_load(fast_rules(rules, speedup=12, min_range_s=4))["groups"][0]["rules"]
    assert fast[0]["expr"] == "histogram_quantile(0.95, sum by (le) (rate(x_bucket[5s]))) > 0.2"
    assert fast[0]["for"] == "25s"
    assert fast[0]["labels"] == {"severity": "warning"}
    assert fast[1] == {"alert": "Down", "expr": "up == 0", "for": "2s"}
    assert fast[2]["expr"] == "sum(rate(y[25s])) / sum(rate(z[4s]))"
