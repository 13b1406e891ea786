"""The reconciler: every rule of clickhouse/queries/ on a short cadence over what is new, plus a full
pass on demand.

    python -m perpline.recon.runner                # continuous, every PERPLINE_RECON_INTERVAL_S (5 s)
    perpline recon --full [--once]                 # a full pass (everything, not only new rows)
    perpline recon repairs | repair ID --apply | resume SYMBOL   # the operator's side (perpline.recon.operator)

Each run: since_ms = the previous run's start minus an overlap (rows the sink wrote meanwhile), every
rule, then one row in recon_runs and one per break in recon_breaks (ClickHouse), each break on
`recon.breaks` (key: rule), and Prometheus gauges: breaks per rule, last run time and duration.
A rule's finding is reported only once the data it judged was complete (perpline.recon.confirm): found
again at a later pass after every stage between the matcher and ClickHouse consumed what existed when it
was first found. A one-off pass (--once, or no broker) reports what it finds.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from decimal import Decimal
from typing import Any

from confluent_kafka import Producer
from prometheus_client import Counter, Gauge

from perpline.ch.client import get_client, wait_ready
from perpline.ch.migrate import apply_migrations
from perpline.config import producer_config, settings, topic_map
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.contracts.instruments import load_catalog
from perpline.contracts.units import format_rate
from perpline.obs import StopFlag, clear_ready, mark_ready, serve_metrics, setup_logging
from perpline.recon.confirm import Confirmer, Progress
from perpline.recon.progress import BrokerProgress
from perpline.recon.repairs import LedgerLog, Repairer
from perpline.recon.rules import SETTLE_GRACE_MS, Break, Rule, load_rules, run_rule
from perpline.wallet import StatementImport

log = logging.getLogger("perpline.recon")
OVERLAP_MS = 10_000
# A pass whose fingerprint of the database (rows and newest part per table) equals the previous pass's,
# after that pass found nothing and judged everything past its grace, would judge the same rows the same
# way: it is skipped (recorded as mode "unchanged"), at most MAX_UNCHANGED_S in a row. Every table counts
# but the two each pass writes itself, so a rule that reads a new table is covered without a list here.
PASS_OUTPUT_TABLES = ("recon_runs", "recon_breaks")
FINGERPRINT_SQL = ("SELECT table, sum(rows), toUnixTimestamp(max(modification_time)), count() FROM system.parts "
                   "WHERE database = currentDatabase() AND active AND table NOT IN {own:Array(String)} "
                   "GROUP BY table ORDER BY table")
MAX_UNCHANGED_S = 60.0
IN_FLIGHT_SQL = "SELECT count() FROM recon_repairs FINAL WHERE status IN ('applied', 'open')"
BREAKS = Gauge("perpline_recon_breaks", "breaks found by the last run, per rule", ["rule"])
LAST_RUN = Gauge("perpline_recon_last_run_timestamp_seconds", "when the last run finished")
RUN_SECONDS = Gauge("perpline_recon_run_seconds", "how long the last run took")
RULE_ERRORS = Counter("perpline_recon_rule_errors_total", "rule runs that failed (bad SQL, ClickHouse away)", ["rule"])
RULE_SECONDS = Gauge("perpline_recon_rule_seconds", "how long each rule took in the last run", ["rule"])
UNCHANGED = Counter("perpline_recon_unchanged_total", "passes skipped: nothing the rules read had changed")
INSURANCE_FUND = Gauge("perpline_insurance_fund_balance", "the insurance fund's balance per asset in the ledger "
                       "(ClickHouse), read after each run", ["asset"])
FUND_SQL = ("SELECT asset, -sum(amount) FROM ledger_postings FINAL WHERE ledger_account = 'platform:INSURANCE_FUND' "
            "GROUP BY asset")


def export_insurance_fund(client: Any) -> None:
    """The fund's balance (a credit balance in the ledger: minus the postings' sum) for the alert on a draining fund."""
    for inst in load_catalog().instruments.values():
        INSURANCE_FUND.labels(inst.margin_asset)  # 0 until the first posting
    for asset, balance in client.query(FUND_SQL).result_rows:
        INSURANCE_FUND.labels(asset).set(float(balance))


class Reconciler:
    def __init__(self, client: Any, producer: Producer | None, rules: list[Rule] | None = None,
                 progress: Progress | None = None, repairer: Repairer | None = None,
                 statement: StatementImport | None = None) -> None:
        self.client = client
        self.statement = statement
        self.repairer = repairer
        self.producer = producer
        self.rules = rules or load_rules()
        self.last_start_ms = 0
        self.last_fingerprint: list[tuple[Any, ...]] | None = None  # of the last pass that ran its rules
        self.last_found: list[Break] = []
        self.quiet_ms = SETTLE_GRACE_MS + 1_000  # newest change this much older than a pass: it judged it all
        self.confirmer = Confirmer(progress)
        for rule in self.rules:  # every rule's series exported from the start (at 0)
            RULE_ERRORS.labels(rule.name)

    def publish_instruments(self) -> None:
        """The fee rates trade_fees.sql checks against, from instruments.yaml (the one source)."""
        now_ms = int(time.time() * 1000)
        rows = [[i.symbol, Decimal(format_rate(i.maker_fee_e8)), Decimal(format_rate(i.taker_fee_e8)), now_ms]
                for i in load_catalog().instruments.values()]
        self.client.insert("instruments", rows, column_names=["symbol", "maker_fee_rate", "taker_fee_rate", "updated_ms"])

    def fingerprint(self) -> list[tuple[Any, ...]] | None:
        """What the rules may read, in brief: per table its rows, newest part (seconds) and parts. Any insert
        changes it; a merge may too (then a pass runs that need not have: harmless). None when it cannot
        be read (a ClickHouse user without access to system.parts): then every pass runs its rules."""
        try:
            rows = self.client.query(FINGERPRINT_SQL, parameters={"own": list(PASS_OUTPUT_TABLES)}).result_rows
        except Exception as exc:  # noqa: BLE001 (a skipped optimisation, never a skipped check)
            log.warning("no fingerprint of the rule tables: every pass runs", extra={"error": repr(exc)[:500]})
            return None
        return [tuple(r) for r in rows]

    def unchanged(self, fingerprint: list[tuple[Any, ...]] | None) -> bool:
        """Whether a pass now would judge exactly what the last one did: the same rows, no finding
        awaiting confirmation, no repair applied and not yet confirmed, every row older than the last pass's
        start by more than the settlement grace (so no rule's grace expired since), and a pass that ran its
        rules less than MAX_UNCHANGED_S ago."""
        if fingerprint is None or fingerprint != self.last_fingerprint:
            return False
        since_last_ms = time.time() * 1000 - self.last_start_ms
        if self.last_found or self.confirmer.pending or since_last_ms >= MAX_UNCHANGED_S * 1000:
            return False
        newest_ms = max((int(r[2]) for r in fingerprint), default=0) * 1000 + 999  # the part's second, rounded up
        return newest_ms + self.quiet_ms < self.last_start_ms and not self._repairs_in_flight()

    def _repairs_in_flight(self) -> bool:
        """A repair applied (or about to be) is re-checked by every pass until confirmed."""
        return bool(self.client.query(IN_FLIGHT_SQL).result_rows[0][0])

    def run_if_changed(self) -> list[Break]:
        """The continuous reconciler's pass: the rules only when something they read changed (an idle
        stack's ClickHouse spent about 5 % of a core re-running them on the same rows)."""
        self._import_statement()
        fingerprint = self.fingerprint()
        if not self.unchanged(fingerprint):
            return self._pass(False, fingerprint)
        now_ms = int(time.time() * 1000)
        UNCHANGED.inc()
        self._record(uuid.uuid4().hex[:16], "unchanged", now_ms, now_ms, self.last_start_ms, [])
        LAST_RUN.set(now_ms / 1000)  # the books are known to be as the last pass judged them, up to now
        return []

    def run(self, full: bool = False) -> list[Break]:
        """Every rule once (all rows when `full`, else those since the previous pass less an overlap)."""
        self._import_statement()
        return self._pass(full, self.fingerprint())

    def _pass(self, full: bool, fingerprint: list[tuple[Any, ...]] | None) -> list[Break]:
        """The rules, after the wallet statement's import and the fingerprint (taken before the rules: a
        row written while they run makes the next pass run)."""
        started_ms = int(time.time() * 1000)
        since_ms = 0 if full or not self.last_start_ms else self.last_start_ms - OVERLAP_MS
        since_ms = self.confirmer.since_floor(since_ms)
        self.confirmer.begin_pass()
        run_id = uuid.uuid4().hex[:16]
        findings: list[Break] = []
        for rule in self.rules:
            t0 = time.perf_counter()
            try:
                breaks = run_rule(self.client, rule, since_ms, started_ms)
            except Exception as exc:  # noqa: BLE001 (one broken rule must not stop the others: count and log it)
                RULE_ERRORS.labels(rule.name).inc()
                log.error("reconciliation rule failed", extra={"rule": rule.name, "error": repr(exc)[:2000]})
                continue
            RULE_SECONDS.labels(rule.name).set(time.perf_counter() - t0)
            findings += breaks
        found = self.confirmer.judge(findings, since_ms)
        for rule in self.rules:
            BREAKS.labels(rule.name).set(sum(1 for b in found if b.rule == rule.name))
        self.last_start_ms = started_ms
        self.last_fingerprint, self.last_found = fingerprint, found
        finished_ms = int(time.time() * 1000)
        self._record(run_id, "full" if full else "incremental", started_ms, finished_ms, since_ms, found)
        if self.repairer is not None:
            try:
                self.repairer.after_pass(found)
            except Exception as exc:  # noqa: BLE001 (a repair pass that fails is retried at the next run)
                log.error("repair pass failed", extra={"error": repr(exc)[:2000]})
        LAST_RUN.set(finished_ms / 1000)
        RUN_SECONDS.set((finished_ms - started_ms) / 1000)
        for b in found:
            log.error("reconciliation break", extra={"rule": b.rule, "severity": b.severity, "asset": b.asset,
                                                     "account": b.account_id, "symbol": b.symbol,
                                                     "journal": b.journal_id, "detail": b.detail})
        return found

    def _import_statement(self) -> None:
        """The wallet's statement as of now, so the wallet rules judge it with the ledger (perpline.wallet)."""
        if self.statement is None:
            return
        try:
            self.statement.pull(self.client)
        except Exception as exc:  # noqa: BLE001 (broker away: the rules judge the statement imported so far)
            log.error("wallet statement import failed", extra={"error": repr(exc)[:2000]})

    def _record(self, run_id: str, mode: str, started_ms: int, finished_ms: int, since_ms: int,
                found: list[Break]) -> None:
        self.client.insert("recon_runs", [[run_id, mode, started_ms, finished_ms, since_ms, len(self.rules), len(found)]],
                           column_names=["run_id", "mode", "started_ms", "finished_ms", "since_ms", "rules", "breaks"])
        if found:
            self.client.insert("recon_breaks", [[run_id, b.rule, b.severity, b.asset, b.account_id, b.symbol,
                                                 b.journal_id, b.ref_type, b.window_start_ms, b.window_end_ms,
                                                 b.detail, finished_ms] for b in found],
                               column_names=["run_id", "rule", "severity", "asset", "account_id", "symbol",
                                             "journal_id", "ref_type", "window_start_ms", "window_end_ms", "detail",
                                             "found_ms"])
        if self.producer is not None and found:
            topic = topic_map()["recon.breaks"]
            for b in found:
                msg = m.ReconBreak(trace_id="", causation_id=run_id, ts_ms=finished_ms, run_id=run_id, rule=b.rule,
                                   severity=b.severity, asset=b.asset, account_id=b.account_id, symbol=b.symbol,
                                   journal_id=b.journal_id, ref_type=b.ref_type, window_start_ms=b.window_start_ms,
                                   window_end_ms=b.window_end_ms, detail=b.detail[:1000])
                self.producer.produce(topic, key=b.rule.encode(), value=codec.encode(msg))
            self.producer.flush(10)


def main(argv: list[str] | None = None) -> None:
    if argv and argv[0] in ("repairs", "repair", "resume"):
        from perpline.recon import operator  # noqa: PLC0415

        operator.main(argv)
        return
    parser = argparse.ArgumentParser(prog="perpline recon")
    parser.add_argument("--full", action="store_true", help="check everything, not only rows inserted since the last run")
    parser.add_argument("--once", action="store_true", help="one run, print the breaks as JSON lines, exit 1 if any")
    parser.add_argument("--interval-s", type=float, default=float(os.environ.get("PERPLINE_RECON_INTERVAL_S", "5")))
    args = parser.parse_args(argv)
    setup_logging("recon")
    cfg = settings()
    wait_ready(cfg.clickhouse_url, timeout_s=120)
    client = get_client(cfg.clickhouse_url)
    apply_migrations(client)
    producer = Producer(producer_config(cfg.kafka_bootstrap))
    repairer = None if args.once else Repairer(client, producer, LedgerLog(cfg.kafka_bootstrap), load_rules())
    recon = Reconciler(client, producer, progress=None if args.once else BrokerProgress(cfg.kafka_bootstrap),
                       repairer=repairer, statement=StatementImport(cfg.kafka_bootstrap))
    recon.publish_instruments()
    if args.once:
        found = recon.run(full=args.full)
        import json  # noqa: PLC0415

        for b in found:
            print(json.dumps(b.__dict__))
        raise SystemExit(1 if found else 0)
    serve_metrics(None)
    clear_ready()
    stopping = StopFlag()
    mark_ready()
    first = True
    while not stopping:
        deadline = time.monotonic() + (0 if first else args.interval_s)
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if not stopping:
            try:
                if args.full or first:
                    recon.run(full=True)  # a full pass first, then incremental ones when anything changed
                else:
                    recon.run_if_changed()
                first = False
                export_insurance_fund(client)
            except Exception as exc:  # noqa: BLE001 (ClickHouse away for a moment: report, try again next time)
                log.error("reconciliation run failed", extra={"error": repr(exc)})


if __name__ == "__main__":
    main()
