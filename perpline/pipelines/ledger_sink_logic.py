"""Rows for ClickHouse from topic messages. Pure: the Quix wiring and the client live in ledger_sink.py."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from perpline.accounts.ledger import journal_sum
from perpline.contracts import messages as m

POSTING_COLUMNS = ["journal_id", "posting_index", "ref_type", "ref_id", "account_id", "symbol", "ledger_account",
                   "asset", "amount", "trace_id", "causation_id", "ts_ms", "source_partition", "source_offset",
                   "account_seq"]
ACCOUNT_EVENT_COLUMNS = ["source_partition", "source_offset", "account_id", "type", "trace_id", "causation_id",
                         "ts_ms", "payload"]
MATCHER_EVENT_COLUMNS = ["symbol", "seq", "type", "trace_id", "causation_id", "ts_ms", "payload"]


class Unbalanced(ValueError):
    pass


def posting_rows(journal: m.Journal, partition: int, offset: int) -> list[list[Any]]:
    """One row per posting; refuses a journal that does not sum to zero per asset."""
    if not journal.postings or any(journal_sum(journal, asset) != 0 for asset in {p.asset for p in journal.postings}):
        raise Unbalanced(f"journal {journal.journal_id} does not sum to zero per asset")
    return [[journal.journal_id, i, journal.ref_type, journal.ref_id, journal.account_id, journal.symbol,
             p.ledger_account, p.asset, Decimal(p.amount), journal.trace_id, journal.causation_id, journal.ts_ms,
             partition, offset, journal.account_seq] for i, p in enumerate(journal.postings)]


def account_event_row(event: m.Msg, raw: bytes, partition: int, offset: int) -> list[Any]:
    return [partition, offset, event.account_id, _tag(event), event.trace_id, event.causation_id,
            event.ts_ms, raw.decode()]


def matcher_event_row(event: m.Msg, raw: bytes) -> list[Any]:
    return [event.symbol, event.seq, _tag(event), event.trace_id, event.causation_id,
            event.ts_ms, raw.decode()]


def _tag(event: msgspec.Struct) -> str:
    return str(type(event).__struct_config__.tag)
