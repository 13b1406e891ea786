"""Audit queries over the ledger in ClickHouse, for notebooks, the API and operators.

    from perpline.audit import Audit
    audit = Audit.connect("http://127.0.0.1:18123")
    audit.balance_sheet()                       # per asset: assets == liabilities + equity, now
    audit.balance_sheet(at_ms=1795590000000)    # ... at any past instant, from the ledger alone
    audit.account(100001)                       # balances by kind, fees, funding, realised PnL to date
    audit.statement(100001, from_ms, to_ms)     # opening, every line with its running balance, closing
    audit.trace("3f2a...")                      # a trace id, client order id or trade id: all it caused
    audit.repairs()                             # every repair record: break, rule, journals, who, when, re-check

Everything is computed from `ledger_postings` (and the event tables for traces); sign convention as
docs/ledger.md: debit positive, so a credit-normal account's balance is minus its postings' sum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from perpline.ch.client import get_client
from perpline.contracts.instruments import load_catalog
from perpline.contracts.units import format_amount, parse_amount
from perpline.recon import repair_columns
from perpline.risk import formulas

ASSET_ACCOUNTS = ("platform:HOT_WALLET",)
EQUITY_ACCOUNTS = ("platform:FEE_REVENUE", "platform:INSURANCE_FUND", "platform:FUNDING_CLEARING",
                   "platform:PNL_CLEARING")
USER_KINDS = ("SPOT", "ORDER_MARGIN", "POSITION_MARGIN")
FAR_FUTURE_MS = 2**62
MAX_LINES = 100_000
REPAIR_REF_TYPE = "RECON_REPAIR"  # perpline.accounts.repairs.REF_TYPE: ref_id "repair:<repair id>:<label>"
REPAIR_COLUMNS = repair_columns.SHOWN


def repair_of(ref_id: str) -> str:
    """The repair a RECON_REPAIR journal belongs to, from its cause "repair:<repair id>:<label>"."""
    parts = ref_id.split(":")
    return parts[1] if len(parts) >= 3 and parts[0] == "repair" else ""


@dataclass
class Audit:
    client: Any

    @classmethod
    def connect(cls, url: str) -> Audit:
        return cls(get_client(url))

    # --- the whole exchange ------------------------------------------------------------------------

    def trial_balance(self, at_ms: int | None = None) -> dict[str, dict[str, Decimal]]:
        """asset -> ledger account -> balance as the sum of its postings (debit positive), at an instant."""
        rows = self.client.query(
            "SELECT asset, ledger_account, sum(amount) FROM ledger_postings FINAL WHERE ts_ms <= {t:Int64} "
            "GROUP BY asset, ledger_account ORDER BY asset, ledger_account",
            parameters={"t": at_ms if at_ms is not None else FAR_FUTURE_MS}).result_rows
        out: dict[str, dict[str, Decimal]] = {}
        for asset, account, total in rows:
            out.setdefault(asset, {})[account] = Decimal(total)
        return out

    def balance_sheet(self, at_ms: int | None = None) -> dict[str, dict[str, Any]]:
        """asset -> {assets, liabilities, equity (each: total and lines), balanced}. Assets are debit-
        normal (their postings' sum); liabilities (what users hold) and equity credit-normal."""
        sheet = {}
        for asset, accounts in self.trial_balance(at_ms).items():
            assets = {a: v for a, v in accounts.items() if a in ASSET_ACCOUNTS}
            users = {a: -v for a, v in accounts.items() if a.startswith("user:")}
            equity = {a: -v for a, v in accounts.items() if a in EQUITY_ACCOUNTS}
            other = {a: v for a, v in accounts.items() if a not in assets and a not in equity and not a.startswith("user:")}
            liabilities_by_kind = {kind: sum((v for a, v in users.items() if a.endswith(":" + kind)), Decimal(0))
                                   for kind in USER_KINDS}
            total_assets = sum(assets.values(), Decimal(0))
            total_liabilities = sum(users.values(), Decimal(0))
            total_equity = sum(equity.values(), Decimal(0))
            sheet[asset] = {"assets": {"total": total_assets, "lines": assets},
                            "liabilities": {"total": total_liabilities, "by_kind": liabilities_by_kind,
                                            "accounts": len(users)},
                            "equity": {"total": total_equity, "lines": equity}, "unclassified": other,
                            "balanced": total_assets == total_liabilities + total_equity and not other}
        return sheet

    # --- one account -------------------------------------------------------------------------------

    def account(self, account_id: int, at_ms: int | None = None) -> dict[str, Any]:
        """Balances by kind, and fees, funding, realised PnL and liquidation results to date."""
        t = at_ms if at_ms is not None else FAR_FUTURE_MS
        rows = self.client.query(
            "SELECT asset, ledger_account, ref_type, sum(amount) FROM ledger_postings FINAL "
            "WHERE account_id = {a:UInt64} AND ts_ms <= {t:Int64} AND ledger_account LIKE {p:String} "
            "GROUP BY asset, ledger_account, ref_type",
            parameters={"a": account_id, "t": t, "p": f"user:{account_id}:%"}).result_rows
        out: dict[str, Any] = {}
        for asset, account, ref_type, total in rows:
            view = out.setdefault(asset, {"balances": dict.fromkeys(USER_KINDS, Decimal(0)), "fees_paid": Decimal(0),
                                          "funding": Decimal(0), "realized_pnl": Decimal(0), "deposits": Decimal(0),
                                          "withdrawals": Decimal(0), "liquidation_losses": Decimal(0)})
            view["balances"][account.rsplit(":", 1)[1]] += -Decimal(total)
            credit = -Decimal(total)
            if ref_type == "TRADE_FEE":
                view["fees_paid"] -= credit
            elif ref_type == "FUNDING":
                view["funding"] += credit
            elif ref_type == "POSITION_REALIZED_PNL":
                view["realized_pnl"] += credit
            elif ref_type == "DEPOSIT":
                view["deposits"] += credit
            elif ref_type == "WITHDRAWAL":
                view["withdrawals"] -= credit
            elif ref_type == "LIQUIDATION":
                view["liquidation_losses"] -= credit
        for view in out.values():
            view["wallet"] = sum(view["balances"].values(), Decimal(0))
        return out

    def account_view(self, account_id: int, at_ms: int | None = None) -> dict[str, Any]:
        """The full account at an instant: the ledger's balances, fees, funding and realised PnL (account());
        each open position (as the accounts processor last published it) with its entry, the mark (the
        last trade price at that instant: the mark the risk process published is not stored), unrealised
        PnL at that mark (formulas.unrealized_pnl, the API's formula), margin and liquidation price; and
        the open orders."""
        t = at_ms if at_ms is not None else FAR_FUTURE_MS
        positions = []
        for payload in self._latest(account_id, "position", "JSONExtractString(payload, 'symbol')", t):
            inst = load_catalog().get(payload["symbol"])
            size_lots = inst.parse_signed_qty(payload["size"]) if inst is not None else 0
            if inst is None or size_lots == 0:
                continue
            mark = self._last_trade_price(inst.symbol, t)
            cost, margin = parse_amount(payload.get("cost", "0")), parse_amount(payload["margin"])
            pnl = formulas.unrealized_pnl(inst, size_lots, cost, inst.parse_price(mark)) if mark is not None else None
            positions.append({"symbol": inst.symbol, "size": payload["size"], "entry_price": payload["entry_price"],
                              "mark_price": mark, "unrealized_pnl": format_amount(pnl) if pnl is not None else None,
                              "margin": payload["margin"], "leverage": payload["leverage"],
                              "liquidation_price": inst.format_price(formulas.liquidation_ticks(inst, size_lots, cost, margin)),
                              "realized_pnl": payload["realized_pnl"]})
        orders = [o["order"] for o in self._latest(account_id, "order", "JSONExtractUInt(payload, 'order', 'order_id')", t)
                  if o["order"]["status"] in ("NEW", "PARTIALLY_FILLED")]
        return {"account_id": account_id, "at_ms": at_ms, "ledger": self.account(account_id, at_ms),
                "positions": positions, "open_orders": orders}

    def _latest(self, account_id: int, kind: str, key_sql: str, at_ms: int) -> list[dict[str, Any]]:
        rows = self.client.query(
            f"SELECT argMax(payload, source_offset) FROM account_events FINAL WHERE account_id = {{a:UInt64}} "
            f"AND type = {{k:String}} AND ts_ms <= {{t:Int64}} GROUP BY {key_sql}",
            parameters={"a": account_id, "k": kind, "t": at_ms}).result_rows
        return [json.loads(r[0]) for r in rows]

    def _last_trade_price(self, symbol: str, at_ms: int) -> str | None:
        found = self.client.query(
            "SELECT argMax(JSONExtractString(payload, 'price'), seq) FROM matcher_events FINAL "
            "WHERE symbol = {s:String} AND type = 'trade' AND ts_ms <= {t:Int64}",
            parameters={"s": symbol, "t": at_ms}).result_rows
        return str(found[0][0]) if found and found[0][0] else None

    def statement(self, account_id: int, from_ms: int, to_ms: int, asset: str = "USDT") -> dict[str, Any]:
        """Opening balance, each journal of the period with its running balance, closing balance: all
        from the ledger, so opening + the lines == closing by construction, and closing equals the
        balance at `to_ms` computed on its own (checked)."""
        prefix = f"user:{account_id}:%"
        opening = -Decimal(self.client.query(
            "SELECT sum(amount) FROM ledger_postings FINAL WHERE ledger_account LIKE {p:String} AND asset = {s:String} "
            "AND ts_ms < {f:Int64}", parameters={"p": prefix, "s": asset, "f": from_ms}).result_rows[0][0] or 0)
        rows = self.client.query(
            "SELECT journal_id, any(ref_type), any(ref_id), min(ts_ms), any(trace_id), -sum(amount) FROM ledger_postings FINAL "
            "WHERE ledger_account LIKE {p:String} AND asset = {s:String} AND ts_ms >= {f:Int64} AND ts_ms <= {t:Int64} "
            "GROUP BY journal_id ORDER BY min(ts_ms), any(account_seq), journal_id LIMIT {n:UInt32}",
            parameters={"p": prefix, "s": asset, "f": from_ms, "t": to_ms, "n": MAX_LINES}).result_rows
        balance, lines = opening, []
        for journal_id, ref_type, ref_id, ts_ms, trace_id, change in rows:
            balance += Decimal(change)
            lines.append({"journal_id": journal_id, "ref_type": ref_type, "ref_id": ref_id, "ts_ms": ts_ms,
                          "trace_id": trace_id, "change": Decimal(change), "balance": balance})
        records = {r["repair_id"]: r for r in self.repairs(
            [repair_of(line["ref_id"]) for line in lines if line["ref_type"] == REPAIR_REF_TYPE])}
        for line in lines:
            if line["ref_type"] == REPAIR_REF_TYPE:
                line["repair"] = records.get(repair_of(line["ref_id"]))
        closing = self.account(account_id, to_ms).get(asset, {}).get("wallet", Decimal(0))
        return {"account_id": account_id, "asset": asset, "from_ms": from_ms, "to_ms": to_ms, "opening": opening,
                "lines": lines, "closing": balance, "agrees_with_ledger": balance == closing,
                "repairs": list(records.values())}

    # --- repairs -----------------------------------------------------------------------------------

    def repairs(self, repair_ids: list[str] | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Repair records (recon_repairs, newest state of each): which break (rule, its dimensions and
        detail), the action and policy, by whom (policy:auto | operator:<name>), when, the journals it
        posted or restored, those it voided, and the re-check that confirmed it. `repair_ids`: only those."""
        if repair_ids is not None and not repair_ids:
            return []
        where = "WHERE repair_id IN {ids:Array(String)}" if repair_ids is not None else ""
        result = self.client.query(
            f"SELECT {', '.join(REPAIR_COLUMNS)} FROM recon_repairs FINAL {where} ORDER BY proposed_ms DESC "
            "LIMIT {n:UInt32}", parameters={"ids": repair_ids or [], "n": limit})
        return [dict(zip(REPAIR_COLUMNS, row, strict=True)) for row in result.result_rows]

    # --- traces ------------------------------------------------------------------------------------

    def trace(self, key: str) -> list[dict[str, Any]]:
        """Everything a trace id caused, in time order: account events, matcher events and journals. The
        key may also be a client order id or a trade id, resolved to the trace that carried it."""
        trace_id = self._resolve_trace(key)
        if not trace_id:
            return []
        out = []
        for table, kind_column in (("account_events", "type"), ("matcher_events", "type")):
            for ts_ms, kind, payload in self.client.query(
                    f"SELECT ts_ms, {kind_column}, payload FROM {table} FINAL WHERE trace_id = {{t:String}} "
                    "ORDER BY ts_ms LIMIT 10000", parameters={"t": trace_id}).result_rows:
                out.append({"ts_ms": ts_ms, "source": table, "type": kind, "detail": payload})
        for ts_ms, journal_id, ref_type, account, amount in self.client.query(
                "SELECT min(ts_ms), journal_id, any(ref_type), any(account_id), "
                "sumIf(amount, amount > 0) FROM ledger_postings FINAL WHERE trace_id = {t:String} "
                "GROUP BY journal_id ORDER BY min(ts_ms) LIMIT 10000", parameters={"t": trace_id}).result_rows:
            out.append({"ts_ms": ts_ms, "source": "ledger_postings", "type": ref_type,
                        "detail": f"{journal_id} account {account} amount {amount}"})
        for record in self.repairs([trace_id]):  # a repair's journals carry its id as their trace
            out.append({"ts_ms": record["applied_ms"] or record["proposed_ms"], "source": "recon_repairs",
                        "type": record["action"], "detail": json.dumps(record, default=str)})
        return sorted(out, key=lambda r: (r["ts_ms"], r["source"]))

    def _resolve_trace(self, key: str) -> str:
        params = {"k": key}
        for sql in ("SELECT any(trace_id) FROM ledger_postings WHERE trace_id = {k:String}",
                    "SELECT any(trace_id) FROM account_events WHERE trace_id = {k:String}",
                    "SELECT any(trace_id) FROM account_events WHERE type = 'order' "
                    "AND JSONExtractString(payload, 'order', 'client_order_id') = {k:String}",
                    "SELECT any(trace_id) FROM matcher_events WHERE type = 'trade' "
                    "AND toString(JSONExtractUInt(payload, 'trade_id')) = {k:String}"):
            found = self.client.query(sql, parameters=params).result_rows
            if found and found[0][0]:
                return str(found[0][0])
        return ""

    # --- reconciliation history --------------------------------------------------------------------

    def recon_runs(self, limit: int = 100) -> list[tuple[Any, ...]]:
        return list(self.client.query("SELECT run_id, mode, started_ms, finished_ms, breaks FROM recon_runs "
                                      "ORDER BY started_ms DESC LIMIT {n:UInt32}", parameters={"n": limit}).result_rows)

    def recon_breaks(self, limit: int = 1000) -> list[tuple[Any, ...]]:
        return list(self.client.query(
            "SELECT found_ms, rule, severity, asset, account_id, symbol, journal_id, detail FROM recon_breaks "
            "ORDER BY found_ms DESC LIMIT {n:UInt32}", parameters={"n": limit}).result_rows)
