"""The monitoring files of deploy/ fit together: what docker-compose mounts exists, Grafana's
provider reads where the dashboard is mounted, every panel uses the provisioned datasource,
and Prometheus finds its rules beside its config."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import yaml

from tests.helpers.prometheus import DASHBOARD, REPO

DEPLOY = REPO / "deploy"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def bind_mounts(service: str) -> dict[str, str]:
    """Container path -> host path (relative to deploy/) of a service's bind mounts."""
    mounts = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = source
    return mounts


def test_every_file_the_stack_mounts_exists() -> None:
    for service in compose()["services"]:
        for source in bind_mounts(service).values():
            assert (DEPLOY / source).exists(), f"{service} mounts missing {source}"


def test_prometheus_loads_the_alert_rules_beside_its_config() -> None:
    mounts = bind_mounts("prometheus")
    config_path = PurePosixPath(next(t for t, s in mounts.items() if s.endswith("prometheus.yml")))
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        in_container = config_path.parent / rule_file
        assert mounts.get(str(in_container)) == f"./prometheus/{rule_file}"
    [job] = config["scrape_configs"]
    assert job["job_name"] == "ordergate"  # the alerts select up{job="ordergate"}
    assert job["static_configs"] == [{"targets": ["gateway:8000"]}]


def test_grafana_is_provisioned_with_the_dashboard_and_its_datasource() -> None:
    mounts = bind_mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provisioning = DEPLOY / "grafana" / "provisioning"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "ordergate.yml").read_text())[
        "providers"
    ]
    dashboard_in_container = next(t for t, s in mounts.items() if s == "./grafana/ordergate.json")
    assert str(PurePosixPath(dashboard_in_container).parent) == provider["options"]["path"]

    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
