"""Grafana dashboards as code: writes k8s/base/dashboards/*.json (committed; provisioned by the
grafana-dashboards ConfigMap). Rerun after changing a panel: `python k8s/dashboards.py`."""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).parent / "base" / "dashboards"


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
    ]),
    "settlement-ledger": dashboard("perpline-settlement", "perpline: settlement and ledger", [
        ("accounts commands / s", [("sum by (type) (rate(perpline_accounts_commands_total[1m]))", "{{type}}")], "ops"),
        ("settlement legs / s", [("sum(rate(perpline_clearing_legs_total[1m]))", "legs")], "ops"),
        ("ledger rows / s", [("sum(rate(perpline_ledger_sink_rows_total[1m]))", "rows")], "ops"),
        ("sink batch latency p99", [("histogram_quantile(0.99, sum by (le) (rate(perpline_ledger_sink_batch_seconds_bucket[5m])))",
                                     "p99")], "s"),
        ("dead letters", [("sum by (source) (increase(perpline_dead_letters_total[5m]))", "{{source}}")], "short"),
        ("invariant alarms", [("sum(increase(perpline_accounts_alarms_total[5m]))", "alarms")], "short"),
    ]),
    "reconciliation": dashboard("perpline-recon", "perpline: reconciliation", [
        ("breaks by rule", [("perpline_recon_breaks", "{{rule}}")], "short"),
        ("seconds since the last run", [("time() - perpline_recon_last_run_timestamp_seconds", "lag")], "s"),
        ("run duration", [("perpline_recon_run_seconds", "run")], "s"),
        ("rule duration", [("perpline_recon_rule_seconds", "{{rule}}")], "s"),
        ("rule errors", [("sum by (rule) (increase(perpline_recon_rule_errors_total[5m]))", "{{rule}}")], "short"),
        ("funding rounds", [("sum by (symbol) (increase(perpline_risk_funding_rounds_total[1h]))", "{{symbol}}")], "short"),
    ]),
    "api": dashboard("perpline-api", "perpline: API", [
        ("requests / s by route", [("sum by (route) (rate(perpline_api_requests_total[1m]))", "{{route}}")], "reqps"),
        ("latency p50 / p99", [("histogram_quantile(0.5, sum by (le) (rate(perpline_api_request_seconds_bucket[5m])))", "p50"),
                               ("histogram_quantile(0.99, sum by (le) (rate(perpline_api_request_seconds_bucket[5m])))", "p99")],
         "s"),
        ("errors / s", [('sum by (status) (rate(perpline_api_requests_total{status=~"4..|5.."}[1m]))', "{{status}}")],
         "reqps"),
        ("rate-limited / s", [('sum(rate(perpline_api_requests_total{status="429"}[1m]))', "429")], "reqps"),
    ]),
}

if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, board in DASHBOARDS.items():
        (OUT / f"{name}.json").write_text(json.dumps(board, indent=2) + "\n")
