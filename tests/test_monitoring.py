"""deploy/: the Grafana dashboard and the Prometheus configuration, against the metrics the
services really register."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

# Imported for what they register in prometheus_client's REGISTRY: the metrics the services expose.
import job_queue_service.metrics  # noqa: F401
import jobprogress_core.metrics  # noqa: F401
import progress_service.metrics  # noqa: F401
import worker_service.metrics  # noqa: F401
from jobprogress_core.settings import DEFAULT_PORTS

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy/grafana/jobprogress.json"
PROMETHEUS = REPO / "deploy/prometheus.yml"
GRAFANA_DATASOURCES = REPO / "deploy/grafana/provisioning/datasources/prometheus.yml"


# --- monitoring ------------------------------------------------------------------------

METRIC = re.compile(r"\bjobprogress_\w+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class Registered:
    names: set[str]  # as exposed and queried (counters with _total)
    histograms: set[str]


def registered_metrics() -> Registered:
    """The jobprogress_ metrics the services' metrics modules register."""
    names, histograms = set(), set()
    for family in REGISTRY.collect():
        if not family.name.startswith("jobprogress_"):
            continue
        # prometheus_client names a counter's family without the _total its samples carry.
        name = f"{family.name}_total" if family.type == "counter" else family.name
        names.add(name)
        if family.type == "histogram":
            histograms.add(name)
    assert names, "no jobprogress_ metric is registered"
    return Registered(names, histograms)


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that draws something (rows, and the panels folded in them, walked through)."""
    found = []
    for panel in board["panels"]:
        found += panel.get("panels", []) if panel["type"] == "row" else [panel]
    return found


def used_metrics(expr: str, registered: Registered) -> set[str]:
    used = set()
    for name in METRIC.findall(expr):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in registered.histograms:
                name = name.removesuffix(suffix)
        used.add(name)
    return used


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    variables = {var["name"]: var for var in board["templating"]["list"]}
    ids = [panel["id"] for panel in board["panels"]]

    assert board["uid"] and board["title"] and 36 <= board["schemaVersion"] <= 41, "not a current dashboard"
    assert variables.get("datasource", {}).get("type") == "datasource", "no datasource variable"
    assert variables["datasource"].get("query") == "prometheus", "the datasource variable is not Prometheus"
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, f"{panel['title']!r} is off the grid: {grid}"


def test_every_panel_queries_prometheus_through_the_variable() -> None:
    for panel in panels(dashboard()):
        title = panel.get("title")
        assert panel.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, (
            f"{title!r}: datasource"
        )
        targets = panel.get("targets") or []
        assert targets, f"{title!r} has no targets"
        for target in targets:
            expr = target.get("expr", "")
            assert expr and expr.count("(") == expr.count(")"), f"{title!r}: expr {expr!r}"
        assert len({t["refId"] for t in targets}) == len(targets), f"{title!r}: refIds repeat"


def test_dashboard_queries_only_metrics_the_services_register() -> None:
    registered = registered_metrics()
    for panel in panels(dashboard()):
        for target in panel["targets"]:
            unknown = used_metrics(target["expr"], registered) - registered.names
            assert not unknown, f"{panel['title']!r} queries {sorted(unknown)}, which no service registers"


def test_every_registered_metric_is_on_the_dashboard() -> None:
    registered = registered_metrics()
    used = {
        name
        for panel in panels(dashboard())
        for t in panel["targets"]
        for name in used_metrics(t["expr"], registered)
    }

    assert not registered.names - used, f"no panel shows {sorted(registered.names - used)}"


def test_every_registered_metric_is_in_the_readme_table() -> None:
    section = (REPO / "README.md").read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(jobprogress_\w+)", section, flags=re.MULTILINE))

    registered = registered_metrics().names
    assert registered <= documented, f"the README's Metrics table lacks {sorted(registered - documented)}"
    assert documented <= registered, f"the README's Metrics table names {sorted(documented - registered)}"


def test_rates_are_taken_of_counters_and_histograms_only() -> None:
    registered = registered_metrics()
    rated = re.compile(r"\b(?:rate|irate|increase)\(\s*(jobprogress_\w+)")
    for panel in panels(dashboard()):
        for target in panel["targets"]:
            for name in rated.findall(target["expr"]):
                histogram = any(name.removesuffix(s) in registered.histograms for s in HISTOGRAM_SUFFIXES)
                assert name.endswith("_total") or histogram, f"{panel['title']!r}: rate() of the gauge {name}"


def test_prometheus_finds_the_services_through_consul() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = [job for job in config["scrape_configs"] if "consul_sd_configs" in job]

    assert jobs, "no scrape job discovers targets through Consul"
    (discovery,) = jobs[0]["consul_sd_configs"]
    assert discovery["server"] == "consul:8500", f"Consul is {discovery['server']}, not the compose service"
    assert set(discovery["services"]) == set(DEFAULT_PORTS), f"discovers {discovery['services']}"
    assert jobs[0].get("metrics_path", "/metrics") == "/metrics", "scrapes another path than /metrics"
    relabel = jobs[0].get("relabel_configs", [])
    assert {"source_labels": ["__meta_consul_service"], "target_label": "service"} in relabel, (
        f"the Consul service name is not relabelled into `service`: {relabel}"
    )


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    (source,) = yaml.safe_load(GRAFANA_DATASOURCES.read_text())["datasources"]

    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090", source
