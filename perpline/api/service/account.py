"""An account's views for every surface: balances, positions valued with the risk formulas
(perpline.risk.formulas: the same integers as the audit and the risk process), totals, orders,
fills, funding payments and income. Integers and messages out; each surface renders them.

Each reads only the parts of the account's view it needs (perpline.api.reads.accounts): balances,
positions and open orders are small; the closed orders and fills (up to 10,000 each) are read only
by the history routes that return them, never by a frame of the account streams."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from perpline.api.deps import ApiDeps, now_ms
from perpline.contracts import messages as m
from perpline.contracts.instruments import Instrument, load_catalog
from perpline.contracts.units import parse_amount
from perpline.risk import adl, formulas


def balances(d: ApiDeps, acct: int) -> list[m.BalanceChanged]:
    return list(d.rm().accounts.balances(acct).values())


@dataclass(frozen=True)
class PositionValue:
    """A position valued at the mark (the risk process's, else the last trade); before any price, at
    its entry with no PnL (mark_ticks 0, priced_ticks the entry)."""

    inst: Instrument
    pos: m.PositionChanged
    size_lots: int  # signed: positive long
    mark_ticks: int  # 0: no price yet
    priced_ticks: int  # the mark, else the entry price
    unrealized_pnl: int
    maint_margin: int
    liquidation_ticks: int
    notional: int  # signed like the size, at priced_ticks
    order_margin: int  # the margin frozen by the account's open orders in this symbol


def value(d: ApiDeps, inst: Instrument, pos: m.PositionChanged, order_margin: int = 0) -> PositionValue:
    size_lots = inst.parse_signed_qty(pos.size)
    cost, margin = parse_amount(pos.cost), parse_amount(pos.margin)
    mark = d.rm().mark_ticks(inst.symbol)
    pnl = formulas.unrealized_pnl(inst, size_lots, cost, mark) if mark else 0
    priced = mark or inst.parse_price(pos.entry_price)
    notional = inst.notional(priced, abs(size_lots)) * (1 if size_lots > 0 else -1)
    return PositionValue(inst, pos, size_lots, mark, priced, pnl, formulas.maint_margin(inst, size_lots, cost, priced),
                         formulas.liquidation_ticks(inst, size_lots, cost, margin), notional, order_margin)


def positions(d: ApiDeps, acct: int, which: Literal["all", "open"] = "open") -> list[PositionValue]:
    """The account's positions, valued; `open` leaves out the closed ones (size 0)."""
    views = d.rm().accounts
    open_orders = views.open_orders(acct)
    out = []
    for pos in views.positions(acct).values():
        inst = load_catalog().get(pos.symbol)
        if inst is None or (which == "open" and inst.parse_signed_qty(pos.size) == 0):
            continue
        order_margin = sum(parse_amount(o.margin) for o in open_orders if o.symbol == inst.symbol)
        out.append(value(d, inst, pos, order_margin))
    return out


def adl_quantile(d: ApiDeps, p: PositionValue) -> int:
    """The position's ADL indicator among the positions on its side (perpline.risk.adl: the ranking
    auto-deleveraging uses), at the mark; 0 before a price."""
    if not p.mark_ticks:
        return 0
    inst, mark = p.inst, p.mark_ticks

    def score_of(pos: m.PositionChanged) -> Fraction:
        return adl.score(inst, inst.parse_signed_qty(pos.size), parse_amount(pos.cost), parse_amount(pos.margin), mark)

    long = p.size_lots > 0
    side = [score_of(q) for q in d.rm().open_positions(inst.symbol) if (not q.size.startswith("-")) == long]
    return adl.quantile(score_of(p.pos), side)


@dataclass(frozen=True)
class AssetTotals:
    asset: str
    wallet: int
    available: int
    position_margin: int
    order_margin: int
    unrealized_pnl: int
    maint_margin: int
    update_ms: int

    @property
    def initial_margin(self) -> int:
        return self.position_margin + self.order_margin

    @property
    def margin_balance(self) -> int:
        return self.wallet + self.unrealized_pnl


def totals(d: ApiDeps, acct: int, valued: list[PositionValue]) -> list[AssetTotals]:
    """Each margin asset of the catalog: balances, and the PnL and maintenance of the positions in it."""
    held = d.rm().accounts.balances(acct)
    out = []
    for asset in load_catalog().assets:
        bal = held.get(asset)
        mine = [p for p in valued if p.inst.margin_asset == asset]
        out.append(AssetTotals(
            asset, parse_amount(bal.wallet) if bal else 0, parse_amount(bal.available) if bal else 0,
            parse_amount(bal.position_margin) if bal else 0, parse_amount(bal.order_margin) if bal else 0,
            sum(p.unrealized_pnl for p in mine), sum(p.maint_margin for p in mine), bal.ts_ms if bal else now_ms()))
    return out


def orders(d: ApiDeps, acct: int, which: Literal["open", "all"], inst: Instrument | None = None,
           start_ms: int | None = None, end_ms: int | None = None, from_id: int | None = None) -> list[m.OrderView]:
    """The account's orders (open, or open and closed), by order id, filtered as asked."""
    views = d.rm().accounts
    every = [*views.open_orders(acct), *(views.closed_orders(acct) if which == "all" else ())]
    return sorted((o for o in every if (inst is None or o.symbol == inst.symbol)
                   and (start_ms is None or o.created_ms >= start_ms) and (end_ms is None or o.created_ms <= end_ms)
                   and (from_id is None or o.order_id >= from_id)), key=lambda o: o.order_id)


def fills(d: ApiDeps, acct: int, inst: Instrument | None = None, start_ms: int | None = None,
          end_ms: int | None = None, from_id: int | None = None) -> list[m.FillRecorded]:
    return [f for f in d.rm().accounts.fills(acct) if (inst is None or f.symbol == inst.symbol)
            and (start_ms is None or f.ts_ms >= start_ms) and (end_ms is None or f.ts_ms <= end_ms)
            and (from_id is None or f.trade_id >= from_id)]


def funding(d: ApiDeps, acct: int, symbol: str | None = None) -> list[m.FundingApplied]:
    """The account's funding payments (amount: positive paid, negative received), oldest first."""
    return [f for f in d.rm().accounts.funding(acct) if symbol is None or f.symbol == symbol]


IncomeType = Literal["COMMISSION", "REALIZED_PNL", "FUNDING_FEE"]
INCOME_TYPES: tuple[IncomeType, ...] = ("COMMISSION", "REALIZED_PNL", "FUNDING_FEE")


@dataclass(frozen=True)
class Income:
    """One change of the wallet, positive received: a fee paid, realised PnL, or a funding payment."""

    inst: Instrument
    kind: IncomeType
    amount: int
    asset: str
    time_ms: int
    tran_id: int  # unique per row: the trade (or funding time) and the kind
    trade_id: str


def income(d: ApiDeps, acct: int, kind: str | None = None, inst: Instrument | None = None,
           start_ms: int | None = None, end_ms: int | None = None) -> list[Income]:
    """COMMISSION and REALIZED_PNL from the account's fills, FUNDING_FEE from its funding payments,
    oldest first; rows of amount 0 are left out."""
    views = d.rm().accounts
    rows = [*_fill_income(views.fills(acct)), *_funding_income(views.funding(acct))]
    rows = [r for r in rows if (kind is None or r.kind == kind) and (inst is None or r.inst.symbol == inst.symbol)
            and (start_ms is None or r.time_ms >= start_ms) and (end_ms is None or r.time_ms <= end_ms)]
    return sorted(rows, key=lambda r: (r.time_ms, r.tran_id))


def _fill_income(found: Iterable[m.FillRecorded]) -> list[Income]:
    rows = []
    for f in found:
        inst = load_catalog().get(f.symbol)
        if inst is None:
            continue
        for kind, amount, n in (("COMMISSION", -parse_amount(f.fee), 1),
                                ("REALIZED_PNL", parse_amount(f.realized_pnl, allow_negative=True), 2)):
            if amount != 0:
                rows.append(Income(inst, kind, amount, f.fee_asset, f.ts_ms, f.trade_id * 10 + n, str(f.trade_id)))  # type: ignore[arg-type]
    return rows


def _funding_income(payments: Iterable[m.FundingApplied]) -> list[Income]:
    """A funding payment's `amount` is what the account paid; income is what it received."""
    rows = []
    for p in payments:
        inst = load_catalog().get(p.symbol)
        paid = parse_amount(p.amount, allow_negative=True)
        if inst is not None and paid != 0:
            rows.append(Income(inst, "FUNDING_FEE", -paid, p.asset, p.funding_time_ms, p.funding_time_ms * 10 + 3, ""))
    return rows
