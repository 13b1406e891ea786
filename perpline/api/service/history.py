"""An account's history from ClickHouse (the ledger and the audit; the read model holds current
state): ledger postings, statements, the account at an instant, and what a key caused."""

from __future__ import annotations

import re
from typing import Any

from perpline.api.deps import ApiDeps
from perpline.audit import Audit
from perpline.contracts.codes import Code, PerplineError

MAX_JOURNALS = 1000
MAX_TRACE_KEY_CHARS = 64
JOURNAL_COLUMNS = ("journal_id", "ref_type", "ref_id", "symbol", "ledger_account", "asset", "amount", "trace_id", "ts_ms")


def journals(d: ApiDeps, acct: int, ref_type: str | None, limit: int) -> list[dict[str, Any]]:
    """The account's ledger postings, newest first (amount a Decimal)."""
    where = "account_id = {a:UInt64}" + (" AND ref_type = {r:String}" if ref_type else "")
    rows = d.clickhouse().query(
        f"SELECT {', '.join(JOURNAL_COLUMNS)} "
        f"FROM ledger_postings FINAL WHERE {where} ORDER BY ts_ms DESC, journal_id, posting_index LIMIT {{n:UInt32}}",
        parameters={"a": acct, "r": ref_type or "", "n": min(limit, MAX_JOURNALS)}).result_rows
    return [dict(zip(JOURNAL_COLUMNS, row, strict=True)) for row in rows]


def statement(d: ApiDeps, acct: int, from_ms: int, to_ms: int, asset: str) -> dict[str, Any]:
    return Audit(d.clickhouse()).statement(acct, from_ms, to_ms, asset)


def ledger_view(d: ApiDeps, acct: int, at_ms: int | None) -> dict[str, Any]:
    return Audit(d.clickhouse()).account(acct, at_ms)


def account_view(d: ApiDeps, acct: int, at_ms: int | None) -> dict[str, Any]:
    return Audit(d.clickhouse()).account_view(acct, at_ms)


def trace(d: ApiDeps, acct: int, key: str) -> list[dict[str, Any]]:
    """What a trace id, client order id or trade id caused in the caller's account, in order."""
    if len(key) > MAX_TRACE_KEY_CHARS:
        raise PerplineError(Code.MALFORMED, "key too long")
    return own_trace_rows(Audit(d.clickhouse()).trace(key), acct)


def own_trace_rows(rows: list[dict[str, Any]], acct: int) -> list[dict[str, Any]]:
    """The rows of a trace that belong to this account (never account 42's for account 4)."""
    own = re.compile(rf'"account_id":{acct}(?!\d)|account {acct} ')
    return [r for r in rows if r["source"] != "matcher_events" and own.search(r["detail"])]
