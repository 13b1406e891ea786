"""Grafana dashboards as code: writes k8s/base/dashboards/*.json (committed; provisioned by the
grafana-dashboards ConfigMap), and the Prometheus Operator's PrometheusRule of the monitoring component
from the alert rules k8s/base/alerts/perpline.rules.yaml (the one place rules are written).
Rerun after changing a panel or a rule: `python k8s/dashboards.py` (a test checks both are current)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

K8S = Path(__file__).parent
OUT = K8S / "base" / "dashboards"
RULES = K8S / "base" / "alerts" / "perpline.rules.yaml"
PROMETHEUS_RULE = K8S / "components" / "monitoring" / "prometheusrule.yaml"


def panel(pid: int, title: str, exprs: list[tuple[str, str]], x: int, y: int, unit: str = "short") -> dict:
    return {"id": pid, "type": "timeseries", "title": title, "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + i), "expr": expr, "legendFormat": legend} for i, (expr, legend) in enumerate(exprs)]}


def dashboard(uid: str, title: str, panels: list[tuple[str, list[tuple[str, str]], str]]) -> dict:
    return {"uid": uid, "title": title, "tags": ["perpline"], "timezone": "utc", "schemaVersion": 39, "version": 1,
            "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
            "panels": [panel(i + 1, t, e, (i % 2) * 12, (i // 2) * 8, u) for i, (t, e, u) in enumerate(panels)]}


DASHBOARDS = {
    "exchange-overview": dashboard("perpline-overview", "perpline: exchange overview", [
        ("orders in / s", [("sum(rate(perpline_matcher_inputs_total[1m]))", "matcher inputs")], "ops"),
        ("trades / s", [('sum by (symbol) (rate(perpline_matcher_events_total{type="Trade"}[1m]))', "{{symbol}}")], "ops"),
        ("mark price", [("perpline_risk_mark_price", "{{symbol}}")], "short"),
        ("reconciliation breaks", [("sum by (rule) (perpline_recon_breaks)", "{{rule}}")], "short"),
        ("API requests / s by status", [("sum by (status) (rate(perpline_api_requests_total[1m]))", "{{status}}")], "reqps"),
        ("liquidations / min", [("sum by (symbol) (rate(perpline_risk_liquidations_sent_total[5m])) * 60", "{{symbol}}")],
         "short"),
        ("consumer lag by group", [("sum by (group) (perpline_consumer_lag_messages)", "{{group}}")], "short"),
        ("insurance fund", [("perpline_insurance_fund_balance", "{{asset}}")], "short"),
    ]),
    "matching-engine": dashboard("perpline-matcher", "perpline: matching engine", [
        ("inputs / s by symbol", [("sum by (symbol) (rate(perpline_matcher_inputs_total[1m]))", "{{symbol}}")], "ops"),
        ("batch latency p99", [("histogram_quantile(0.99, sum by (le) (rate(perpline_matcher_batch_seconds_bucket[5m])))",
                                "p99")], "s"),
        ("WAL fsync p99", [("histogram_quantile(0.99, sum by (le) (rate(perpline_matcher_wal_fsync_seconds_bucket[5m])))",
                            "p99")], "s"),
        ("book orders and levels", [("perpline_matcher_book_orders", "orders {{symbol}}"),
                                    ("perpline_matcher_book_levels", "levels {{symbol}}")], "short"),
        ("recovery time", [("perpline_matcher_recovery_seconds", "last recovery")], "s"),
        ("seq", [("perpline_matcher_seq", "{{symbol}}")], "short"),
        ("orders waiting (consumer lag)", [('sum by (topic, partition) (perpline_consumer_lag_messages{group="perpline-matcher"})',
                                           "{{topic}}/{{partition}}")], "short"),
        ("inputs per batch p50 / p99", [("histogram_quantile(0.5, sum by (le) (rate(perpline_matcher_batch_inputs_bucket[5m])))",
                                         "p50"),
                                        ("histogram_quantile(0.99, sum by (le) (rate(perpline_matcher_batch_inputs_bucket[5m])))",
                                         "p99")], "short"),
        ("dead letters", [("sum(increase(perpline_matcher_dead_letters_total[5m]))", "dead letters")], "short"),
    ]),
    "settlement-ledger": dashboard("perpline-settlement", "perpline: settlement and ledger", [
        ("accounts commands / s", [("sum by (type) (rate(perpline_accounts_commands_total[1m]))", "{{type}}")], "ops"),
        ("settlement legs / s", [("sum(rate(perpline_matcher_legs_total[1m]))", "legs")], "ops"),
        ("ledger rows / s", [("sum(rate(perpline_ledger_sink_rows_total[1m]))", "rows")], "ops"),
        ("sink batch latency p99", [("histogram_quantile(0.99, sum by (le) (rate(perpline_ledger_sink_batch_seconds_bucket[5m])))",
                                     "p99")], "s"),
        ("dead letters", [("sum by (source) (increase(perpline_dead_letters_total[5m]))", "{{source}}")], "short"),
        ("invariant alarms", [("sum(increase(perpline_accounts_alarms_total[5m]))", "alarms")], "short"),
        ("consumer lag per partition", [("sum by (group, topic, partition) (perpline_consumer_lag_messages)",
                                         "{{group}} {{topic}}/{{partition}}")], "short"),
        ("processed / s by processor", [("sum by (group) (rate(perpline_processor_messages_total[1m]))", "{{group}}")], "ops"),
        ("processor errors (restarts)", [("sum by (group) (increase(perpline_processor_errors_total[5m]))", "{{group}}")],
         "short"),
        ("ledger rows / s by table", [("sum by (table) (rate(perpline_ledger_sink_rows_total[1m]))", "{{table}}")], "ops"),
    ]),
    "reconciliation": dashboard("perpline-recon", "perpline: reconciliation", [
        ("breaks by rule", [("perpline_recon_breaks", "{{rule}}")], "short"),
        ("seconds since the last run", [("time() - perpline_recon_last_run_timestamp_seconds", "lag")], "s"),
        ("run duration", [("perpline_recon_run_seconds", "run")], "s"),
        ("rule duration", [("perpline_recon_rule_seconds", "{{rule}}")], "s"),
        ("rule errors", [("sum by (rule) (increase(perpline_recon_rule_errors_total[5m]))", "{{rule}}")], "short"),
        ("funding rounds", [("sum by (symbol) (increase(perpline_risk_funding_rounds_total[1h]))", "{{symbol}}")], "short"),
        ("insurance fund", [("perpline_insurance_fund_balance", "{{asset}}")], "short"),
    ]),
    "api": dashboard("perpline-api", "perpline: API", [
        ("requests / s by route", [("sum by (route) (rate(perpline_api_requests_total[1m]))", "{{route}}")], "reqps"),
        ("latency p50 / p99", [("histogram_quantile(0.5, sum by (le) (rate(perpline_api_request_seconds_bucket[5m])))", "p50"),
                               ("histogram_quantile(0.99, sum by (le) (rate(perpline_api_request_seconds_bucket[5m])))", "p99")],
         "s"),
        ("errors / s", [('sum by (status) (rate(perpline_api_requests_total{status=~"4..|5.."}[1m]))', "{{status}}")],
         "reqps"),
        ("rate-limited / s by limit", [("sum by (limit) (rate(perpline_api_rate_limited_total[1m]))", "{{limit}}")], "reqps"),
        ("latency p99 by route", [("histogram_quantile(0.99, sum by (le, route) (rate(perpline_api_request_seconds_bucket[5m])))",
                                   "{{route}}")], "s"),
    ]),
}


METRIC = re.compile(r"\b(perpline_[a-z0-9_]+)\b")
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\{([^{}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
TEMPLATE = re.compile(r"\{\{\s*(?:\$labels\.)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def queries() -> list[tuple[str, str, str]]:
    """(where, PromQL expression, legend or summary) of every dashboard panel target and every alert rule."""
    out = [(f"dashboard {name} / {p['title']}", t["expr"], t["legendFormat"])
           for name, board in DASHBOARDS.items() for p in board["panels"] for t in p["targets"]]
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        out += [(f"alert {r['alert']}", r["expr"], r["annotations"]["summary"]) for r in group["rules"]]
    return out


def metrics_of(expr: str) -> set[str]:
    """The series names an expression reads, as written (a histogram's _bucket, a counter's _total)."""
    return set(METRIC.findall(expr))


def labels_of(expr: str, text: str = "") -> set[str]:
    """Label names an expression (grouping, matchers) and its legend or summary ({{x}}, {{ $labels.x }}) rely on."""
    names = {n.strip() for clause in BY.findall(expr) for n in clause.split(",") if n.strip()}
    names |= {n for selector in SELECTOR.findall(expr) for n in MATCHER.findall(selector)}
    return (names | set(TEMPLATE.findall(text))) - {"le"}


def rendered() -> dict[Path, str]:
    """Every generated file and its text."""
    files = {OUT / f"{name}.json": json.dumps(board, indent=2) + "\n" for name, board in DASHBOARDS.items()}
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "perpline", "namespace": "perpline", "labels": {"release": "kube-prometheus-stack"}},
            "spec": yaml.safe_load(RULES.read_text())}
    files[PROMETHEUS_RULE] = ("# Generated by k8s/dashboards.py from k8s/base/alerts/perpline.rules.yaml: edit that file.\n"
                              + yaml.safe_dump(rule, sort_keys=False, width=200))
    return files


if __name__ == "__main__":
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
