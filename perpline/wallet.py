"""The simulated custody wallet and its own statement (docs/reconciliation.md, "The wallet's statement").

Money enters and leaves the exchange only through the wallet: it receives a deposit on chain and then
tells the exchange (a Deposit command), and it sends a withdrawal once the exchange has debited the user
(an accepted Withdraw). Each movement it executes is a line of its own statement, published on
`wallet.statement` by whoever executes it (the API's faucet and withdrawals, `perpline admin deposit`, a
reconciliation re-drive) and imported by the reconciler into ClickHouse `wallet_statement`. The statement
is written from what the wallet did, never from the ledger: it is the third party the reconciliation
rules check the ledger's DEPOSIT / WITHDRAWAL journals against.

A line answers to the exchange's reference (the journal's cause, ids.wallet_cause) and its id is derived
from it, so the wallet executes one movement per reference: a re-sent line is the same line.
"""

from __future__ import annotations

import hashlib
import time
from decimal import Decimal
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from perpline.config import kafka_config, topic_map
from perpline.contracts import codec, ids
from perpline.contracts import messages as m
from perpline.contracts.instruments import load_catalog
from perpline.contracts.units import UnitError, format_amount, parse_amount
from perpline.topics_tool import watermarks

DEPOSIT, WITHDRAWAL = "DEPOSIT", "WITHDRAWAL"
TOPIC = "wallet.statement"
COLUMNS = ["wallet_tx_id", "direction", "account_id", "asset", "amount", "ref_id", "journal_id", "request_id", "ts_ms"]
IMPORT_GROUP = "perpline-wallet-statement"
MAX_IMPORT_LINES = 100_000  # one import reads at most this many lines (the next pass goes on)
IMPORT_S = 10.0  # and for at most this long


class NotAMovement(ValueError):
    """What the exchange would refuse (unknown asset, amount not > 0): the wallet moves nothing for it."""


def tx_id(direction: str, ref_id: str) -> str:
    """The wallet's own id of a movement, derived from the reference it answers to: one movement per reference."""
    return "wtx-" + hashlib.sha256(f"{direction}:{ref_id}".encode()).hexdigest()[:24]


def movement(direction: str, account_id: int, asset: str, amount: str, request_id: str, ts_ms: int) -> m.WalletMovement:
    """One statement line; raises NotAMovement for what the accounts processor would refuse anyway."""
    if direction not in (DEPOSIT, WITHDRAWAL):
        raise NotAMovement(f"direction {direction!r}")
    if asset not in load_catalog().assets:
        raise NotAMovement(f"unknown asset {asset!r}")
    try:
        units = parse_amount(amount)
    except UnitError as err:
        raise NotAMovement(err.msg) from err
    if units <= 0:
        raise NotAMovement("amount must be greater than zero")
    ref = ids.wallet_cause(account_id, request_id)
    return m.WalletMovement(trace_id="", causation_id=request_id, ts_ms=ts_ms, wallet_tx_id=tx_id(direction, ref),
                            direction=direction, account_id=account_id, asset=asset,  # type: ignore[arg-type]
                            amount=format_amount(units), ref_id=ref, request_id=request_id)


def row(line: m.WalletMovement) -> list[Any]:
    """The line as a wallet_statement row (COLUMNS)."""
    return [line.wallet_tx_id, line.direction, line.account_id, line.asset, Decimal(line.amount), line.ref_id,
            ids.journal_id(line.ref_id, line.direction), line.request_id, line.ts_ms]


def executed(client: Any, journal_id: str) -> bool:
    """Whether the wallet's statement already holds the movement answering to this journal."""
    got = client.query("SELECT count() FROM wallet_statement WHERE journal_id = {j:String}",
                       parameters={"j": journal_id}).result_rows[0][0]
    return int(got) > 0


class StatementImport:
    """Copies the wallet's log (wallet.statement) into ClickHouse wallet_statement: from the committed offset to
    the end, then commits (a line imported twice is one row: ReplacingMergeTree by wallet_tx_id)."""

    def __init__(self, bootstrap: str) -> None:
        self.topic = topic_map()[TOPIC]
        self.consumer = Consumer(kafka_config(bootstrap, **{
            "group.id": IMPORT_GROUP, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10}))
        meta = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        self.parts = [TopicPartition(self.topic, pid) for pid in sorted(meta.partitions)]

    def pull(self, client: Any) -> int:
        """Import what the wallet wrote since the last pull (up to the log's end when the pull began);
        returns the number of lines read. Every pull reads from the committed offsets: a pull whose
        insert failed (ClickHouse killed, say) read lines it never stored, and must not go on after them
        (it did: the consumer's position had moved on, and those lines were missing until a restart)."""
        # the ends corrected by a fetch: the embedded broker's ListOffsets can be low after multi-record batches
        ends = {p: high for (_, p), (_, high) in watermarks(self.consumer, self.parts).items()}
        at = {tp.partition: tp.offset for tp in self.consumer.committed(self.parts, timeout=10)}
        rows = self._read(at, ends)
        if rows:
            client.insert("wallet_statement", rows, column_names=COLUMNS)
            self.consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in at.items() if o >= 0],
                                 asynchronous=False)
        return len(rows)

    def _read(self, at: dict[int, int], ends: dict[int, int]) -> list[list[Any]]:
        """The lines from `at` (moved along) up to `ends`. Assigned only while reading: an assigned consumer
        fetches all the time (at idle, 100 empty fetches a second to the broker)."""
        self.consumer.assign([TopicPartition(self.topic, p, o if o >= 0 else OFFSET_BEGINNING) for p, o in at.items()])
        rows: list[list[Any]] = []
        deadline = time.monotonic() + IMPORT_S
        try:
            while (any(max(at[p], 0) < ends[p] for p in ends) and len(rows) < MAX_IMPORT_LINES
                   and time.monotonic() < deadline):
                msg = self.consumer.poll(0.1)
                if msg is None or msg.error() is not None:
                    continue
                rows.append(row(codec.decode(TOPIC, msg.value())))
                at[msg.partition()] = msg.offset() + 1
        finally:
            self.consumer.unassign()
        return rows

    def close(self) -> None:
        self.consumer.close()
