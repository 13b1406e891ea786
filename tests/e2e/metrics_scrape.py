"""Scrape every /metrics endpoint of a running stack and hold them against the dashboards and alert rules.

`perpline up` prints where each component serves its metrics (the API on its own port, ClickHouse on its
HTTP port, every other process on the port the supervisor gave it in PERPLINE_METRICS_PORT). Every series
name a dashboard panel or an alert rule reads (k8s/dashboards.py queries()) must be among the scraped
samples, with the labels the expression groups or filters by; a declared metric without samples (a
labelled counter never incremented) does not count.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from stackutil import Stack

from perpline import REPO_ROOT


def dashboards() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_dashboards", REPO_ROOT / "k8s" / "dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def endpoints(stack: Stack) -> dict[str, str]:
    """{component: metrics URL} from the announcement line "  metrics    <api>/metrics  name=url ..."."""
    line = next(line for line in stack.lines if line.strip().startswith("metrics ") and "/metrics" in line)
    words = line.split()[1:]
    out = {"api": words[0]}
    out.update(word.split("=", 1) for word in words[1:])  # type: ignore[arg-type]
    return out


Samples = dict[str, list[tuple[dict[str, str], float]]]  # sample name -> [(labels, value)]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, (url, response.status_code)
    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[sample.name].append((dict(sample.labels), sample.value))
    return out


def scrape_all(stack: Stack) -> dict[str, Samples]:
    return {name: scrape(url) for name, url in endpoints(stack).items()}


def merged(scrapes: dict[str, Samples]) -> Samples:
    out: Samples = defaultdict(list)
    for samples in scrapes.values():
        for name, values in samples.items():
            out[name] += values
    return out


def missing_for_dashboards_and_alerts(samples: Samples) -> list[str]:
    """What a panel or rule reads that no scrape has: '<where>: <series> missing' or '<where>: label x missing'."""
    boards = dashboards()
    problems = []
    for where, expr, text in boards.queries():
        names = boards.metrics_of(expr)
        for name in sorted(names - set(samples)):
            problems.append(f"{where}: {name} missing")
        labels = {label for name in names for labels, _ in samples.get(name, []) for label in labels}
        for label in sorted(boards.labels_of(expr, text) - labels):
            problems.append(f"{where}: label {label} missing on {sorted(names)}")
    return problems


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for got, v in samples.get(name, []) if labels.items() <= got.items())
