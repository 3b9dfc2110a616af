"""Prometheus for the tests: finding (or installing) promtool and prometheus, running a
private Prometheus against a gateway, a fast copy of the alert rules for it, and the metric
names a PromQL expression reads."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench.procs import free_port

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "ordergate.json"

# Debian's package carries both binaries; CI installs it (.ci/run), a fresh machine may not.
INSTALL_TIMEOUT_S = 300
INSTALL_LOCK = Path("/tmp/ordergate-tests-prometheus-install.lock")


@dataclass(frozen=True)
class PrometheusTools:
    promtool: str
    prometheus: str


def _which() -> PrometheusTools | None:
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if promtool and prometheus:
        return PrometheusTools(promtool, prometheus)
    return None


def _apt_install() -> str | None:
    """Install Debian's ``prometheus`` package; None when done, else why not."""
    if os.geteuid() != 0:
        return "not root, so apt-get install prometheus was not tried"
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    deadline = time.monotonic() + INSTALL_TIMEOUT_S
    # Two pytest processes may both get here: the second waits for the first's install.
    with INSTALL_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _which() is not None:
            return None
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
        # A fresh machine may have no package lists yet: then update, and try again.
        attempts = (install, ["apt-get", "update", "-q"], install)
        output = ""
        for command in attempts:
            left = deadline - time.monotonic()
            if left <= 0:
                return f"apt-get install prometheus did not finish in {INSTALL_TIMEOUT_S} s"
            try:
                done = subprocess.run(
                    command, env=env, capture_output=True, text=True, timeout=left, check=False
                )
            except subprocess.TimeoutExpired:
                return f"apt-get install prometheus did not finish in {INSTALL_TIMEOUT_S} s"
            output = done.stdout[-500:] + done.stderr[-500:]
            if command is install and done.returncode == 0:
                return None
        return f"apt-get install prometheus failed: {output.strip()}"


@functools.cache
def find_prometheus_tools() -> PrometheusTools | str:
    """promtool and prometheus from PATH, else installed with apt-get (as root); else why
    they are missing."""
    found = _which()
    if found is not None:
        return found
    why = _apt_install()
    found = _which()
    if found is not None:
        return found
    return f"promtool/prometheus not found on PATH and {why or 'not installed by apt-get'}"


def require_prometheus_tools() -> PrometheusTools:
    """The tools, or the test skipped saying why (Debian's package: apt-get install
    prometheus)."""
    found = find_prometheus_tools()
    if isinstance(found, str):
        pytest.skip(found)
    return found


# --- what the rules and the dashboard read -----------------------------------------------


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def dashboard_expressions() -> list[str]:
    """Every PromQL query of the dashboard's panels (Grafana's ``$__...`` variables kept)."""

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return list(walk(json.loads(DASHBOARD.read_text())))


# --- a copy of the rules that fires in seconds ------------------------------------------

_DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")
_RANGE = re.compile(r"\[(\d+(?:ms|s|m|h))\]")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str) -> float:
    match = _DURATION.match(duration)
    if match is None:
        raise ValueError(f"not a simple Prometheus duration: {duration!r}")
    return int(match[1]) * _UNIT_S[match[2]]


def fast_rules(rules_yaml: str, speedup: float, min_range_s: int) -> str:
    """The same rules, their ``for:`` durations and range windows ``speedup`` times shorter
    (whole seconds; ranges at least ``min_range_s``, so that a rate has samples to work on).
    Only time changes: the expressions and thresholds stay those of the file."""

    def scaled(duration: str, floor_s: int) -> str:
        return f"{max(floor_s, round(seconds(duration) / speedup))}s"

    document: dict[str, Any] = yaml.safe_load(rules_yaml)
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["expr"] = _RANGE.sub(lambda m: f"[{scaled(m[1], min_range_s)}]", str(rule["expr"]))
            if "for" in rule:
                rule["for"] = scaled(str(rule["for"]), 1)
    return yaml.safe_dump(document, sort_keys=False)


# --- a private Prometheus -----------------------------------------------------------------


class PrivatePrometheus:
    """``prometheus`` on a free local port with its own storage, scraping ``target``
    (host:port) every second and evaluating ``rules`` every second."""

    def __init__(self, tools: PrometheusTools, workdir: Path, target: str, rules: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tools = tools
        self._dir = workdir
        self._dir.mkdir(parents=True, exist_ok=True)
        (self._dir / "rules.yml").write_text(rules)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [
                {
                    "job_name": "ordergate",
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        (self._dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrivatePrometheus:
        log = (self._dir / "prometheus.log").open("ab")
        self._process = subprocess.Popen(
            [
                self._tools.prometheus,
                f"--config.file={self._dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"prometheus not ready: {self.log()[-3000:]}")

    def __exit__(self, *_: object) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None

    def log(self) -> str:
        return (self._dir / "prometheus.log").read_text(errors="replace")

    async def alerts(self, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        """Every alert pending or firing now (``/api/v1/alerts``)."""
        answer = await client.get(f"{self.url}/api/v1/alerts")
        answer.raise_for_status()
        found: list[dict[str, Any]] = answer.json()["data"]["alerts"]
        return found

    async def query(self, client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector (``/api/v1/query``)."""
        answer = await client.get(f"{self.url}/api/v1/query", params={"query": expr})
        answer.raise_for_status()
        found: list[dict[str, Any]] = answer.json()["data"]["result"]
        return found


# --- the metric names an expression reads --------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")
# Operators and modifiers; aggregations too, as they may stand before a `by (...)` clause.
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan", "sum", "min", "max", "avg", "count", "stddev"}
    | {"stdvar", "topk", "bottomk", "quantile", "count_values", "group"}
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (recorded series, with a colon, included): what is
    left once strings, label matchers, ranges, grouping clauses and function calls are out.
    """
    text = _STRING.sub(" ", expr)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    while _MATCHERS.search(text):
        text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match[1], match[2]
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def exported_name(name: str) -> str:
    """A histogram's series (``_bucket``, ``_sum``, ``_count``) named as the histogram."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def names_on_metrics_page(text: str) -> set[str]:
    """Every metric family and series name in a Prometheus text exposition."""
    names = set()
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
