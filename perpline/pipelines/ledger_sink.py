"""ledger sink: ledger.entries, account.events and matcher.events -> ClickHouse, idempotently.

Journals become one row per posting in ledger_postings (ReplacingMergeTree by
(journal_id, posting_index)); a re-sent batch after a crash replaces identical rows.
A journal that does not sum to zero is never written: it goes to dead.letters.
Offsets are committed by Quix only after the batch is written (sink flush on checkpoint).

A checkpoint writes one insert per table per partition, so the checkpoint interval is the sink's
batch size: PERPLINE_SINK_COMMIT_INTERVAL_S (0.5 s). No answer waits for the sink (the API's
history reads are eventually consistent); with the write path's 20 ms interval, 32 trading pairs
made the embedded ClickHouse server spend half a core on hundreds of tiny inserts a second.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

from confluent_kafka import Producer
from prometheus_client import Counter, Histogram
from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from perpline.ch.client import get_client, wait_ready
from perpline.ch.migrate import apply_migrations
from perpline.config import producer_config, settings
from perpline.contracts import codec, topics
from perpline.contracts.dead_letters import dead_letter
from perpline.obs import serve_metrics, setup_logging
from perpline.pipelines import io
from perpline.pipelines import ledger_sink_logic as rows
from perpline.pipelines.app import make_app
from perpline.pipelines.runtime import export_lag, ready_on_assign

log = logging.getLogger("perpline.ledger_sink")
COMMIT_INTERVAL_S = float(os.environ.get("PERPLINE_SINK_COMMIT_INTERVAL_S", "0.5"))
SOURCE = "ledger-sink"
ROWS = Counter("perpline_ledger_sink_rows_total", "rows written", ["table"])
BATCH_SECONDS = Histogram("perpline_ledger_sink_batch_seconds", "time to write one batch", ["table"])
REJECTED = Counter("perpline_ledger_sink_rejected_total", "messages refused (malformed or unbalanced)")


class TableSink(BatchingSink):
    """Writes one topic's batch to one ClickHouse table; malformed rows go to dead.letters."""

    def __init__(self, url: str, table: str, logical_topic: str) -> None:
        super().__init__()
        self.url, self.table, self.logical_topic = url, table, logical_topic
        self.client: Any = None
        self.dead_producer: Producer | None = None

    def setup(self) -> None:
        self.client = get_client(self.url)
        self.dead_producer = Producer(producer_config(settings().kafka_bootstrap))

    def write(self, batch: SinkBatch) -> None:
        out: list[list[Any]] = []
        for item in batch:
            out.extend(self._rows(item.value, batch.partition, item.offset))
        if not out:
            return
        started = time.monotonic()
        try:
            self.client.insert(self.table, out, column_names=self.columns())
        except Exception as exc:  # noqa: BLE001 (ClickHouse down: retry later, offsets not committed)
            log.warning("insert failed; backing off", extra={"table": self.table, "error": str(exc)[:300]})
            raise SinkBackpressureError(retry_after=2.0) from exc
        ROWS.labels(self.table).inc(len(out))
        BATCH_SECONDS.labels(self.table).observe(time.monotonic() - started)

    def columns(self) -> list[str]:
        return {"ledger_postings": rows.POSTING_COLUMNS, "account_events": rows.ACCOUNT_EVENT_COLUMNS,
                "matcher_events": rows.MATCHER_EVENT_COLUMNS}[self.table]

    def _rows(self, raw: bytes, partition: int, offset: int) -> list[list[Any]]:
        try:
            msg = codec.decode(self.logical_topic, raw)
            if self.table == "ledger_postings":
                return rows.posting_rows(msg, partition, offset)
            if self.table == "account_events":
                return [rows.account_event_row(msg, raw, partition, offset)]
            return [rows.matcher_event_row(msg, raw)]
        except Exception as exc:  # noqa: BLE001 (any bad message: dead letter, never a crash)
            REJECTED.inc()
            letter = io.noted(dead_letter(SOURCE, topics.physical(self.logical_topic), partition, offset, raw,
                                          f"{type(exc).__name__}: {exc}"))
            if self.dead_producer is not None:
                self.dead_producer.produce(topics.physical(topics.DEAD_LETTERS), key=SOURCE.encode(),
                                           value=codec.encode(letter))
                self.dead_producer.flush(10)
            return []


def build(app: Application, url: str) -> None:
    for logical, table in (("ledger.entries", "ledger_postings"), ("account.events", "account_events"),
                           ("matcher.events", "matcher_events")):
        app.dataframe(io.input_topic(app, logical)).sink(TableSink(url, table, logical))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="perpline ledger-sink")
    parser.add_argument("--metrics-port", type=int, default=None)
    args = parser.parse_args(argv)
    setup_logging(SOURCE)
    url = settings().clickhouse_url
    wait_ready(url, timeout_s=60)
    applied = apply_migrations(get_client(url))
    log.info("migrations applied", extra={"applied": applied})
    serve_metrics(args.metrics_port)
    io.DEAD_LETTERS.labels(SOURCE)  # exported from the start (at 0)
    app = make_app("perpline-ledger-sink", processing_guarantee="at-least-once", on_write_path=False,
                   commit_interval=COMMIT_INTERVAL_S)
    build(app, url)
    ready_on_assign(app)
    export_lag(app)
    app.run()


if __name__ == "__main__":
    main()
