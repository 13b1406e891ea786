"""Market views for every surface: book, trades, the rolling 24h ticker, mark and premium, candles,
funding rounds, an order's cost, and the two prices an order command carries (the MARKET protection
bound, the price band's reference). Integers (ticks, lots, minor units) and messages out; each
surface renders them in its own names."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from perpline import config
from perpline.accounts import margin as mg
from perpline.api.deps import ApiDeps, now_ms
from perpline.contracts import messages as m
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.instruments import Instrument, load_catalog
from perpline.contracts.units import parse_amount
from perpline.market.candles import INTERVALS_MS, Candle, DayStats

DAY_MS = 86_400_000
MAX_CANDLES = 1500  # what the read model keeps of each interval (perpline.market.candles)

Levels = list[tuple[str, int]]  # (price string, quantity in lots), best first


@dataclass(frozen=True)
class Depth:
    seq: int  # the matcher seq the levels are as of
    bids: Levels
    asks: Levels


def instruments() -> list[Instrument]:
    return list(load_catalog().instruments.values())


def depth(d: ApiDeps, inst: Instrument, limit: int) -> Depth:
    return Depth(*d.rm().depth_at(inst.symbol, limit))


def depth_changes(d: ApiDeps, inst: Instrument, after_seq: int) -> tuple[int, list[tuple[int, str, str, int]]]:
    """(seq now, every level change after `after_seq`); STALE_SNAPSHOT when they are no longer kept."""
    found = d.rm().depth_changes(inst.symbol, after_seq)
    if found is None:
        raise PerplineError(Code.STALE_SNAPSHOT, f"changes after seq {after_seq} are no longer kept: take a new snapshot")
    return found


def trades(d: ApiDeps, inst: Instrument, limit: int, start_ms: int | None = None, end_ms: int | None = None
           ) -> list[m.Trade]:
    """The last `limit` trades (within [start_ms, end_ms] when given), oldest first."""
    rm = d.rm()
    if start_ms is None and end_ms is None:
        return rm.trades(inst.symbol, limit)
    found = [t for t in rm.trades(inst.symbol, 10**9)
             if (start_ms is None or t.ts_ms >= start_ms) and (end_ms is None or t.ts_ms <= end_ms)]
    return found[-limit:]


def last_price_ticks(d: ApiDeps, inst: Instrument) -> int:
    """The mark (the risk process's, else the last trade), in ticks; 0 before either exists."""
    return d.rm().mark_ticks(inst.symbol)


@dataclass(frozen=True)
class Ticker:
    """The rolling 24 hours (perpline.market.candles.RollingDay); without a trade in them, the last price."""

    day: DayStats
    close_ms: int
    change_ticks: int
    change_percent: str  # 3 decimals, exact rounding of the ratio (no float)
    weighted_ticks: int


def ticker(d: ApiDeps, inst: Instrument) -> Ticker:
    now = now_ms()
    day = d.rm().day_stats(inst.symbol, now)
    if day is None:
        last = last_price_ticks(d, inst)
        day = DayStats(now - DAY_MS, last, last, last, last, 0, 0, 0, 0, -1, -1)
    change = day.last_ticks - day.open_ticks
    pct = (Decimal(change) * 100 / Decimal(day.open_ticks)).quantize(Decimal("0.001")) if day.open_ticks else Decimal("0.000")
    weighted = day.quote_minor // (day.volume_lots * inst.amount_per_tick_lot) if day.volume_lots else day.last_ticks
    return Ticker(day, now, change, str(pct), weighted)


def mark(d: ApiDeps, inst: Instrument) -> m.MarkPrice | None:
    return d.rm().mark(inst.symbol)


@dataclass(frozen=True)
class Premium:
    """Mark, index, the last settled funding rate and the next funding time. Before the risk process
    published a mark: the last price for all three and the next funding boundary."""

    mark_price: str
    index_price: str
    last_funding_rate: str
    interest_e8: int
    next_funding_ms: int
    time_ms: int


def premium(d: ApiDeps, inst: Instrument) -> Premium:
    now = now_ms()
    rounds = d.rm().funding_rounds(inst.symbol)
    last_rate = rounds[-1].rate if rounds else "0.00000000"
    found = mark(d, inst)
    if found is None:
        price = inst.format_price(last_price_ticks(d, inst))
        interval_ms = config.funding_interval_ms()
        return Premium(price, price, last_rate, inst.interest_e8, (now // interval_ms + 1) * interval_ms, now)
    return Premium(found.mark_price, found.index_price, last_rate, inst.interest_e8, found.next_funding_ms, found.ts_ms)


def funding_rounds(d: ApiDeps, inst: Instrument, start_ms: int | None = None, end_ms: int | None = None
                   ) -> list[m.FundingRound]:
    """Settled funding rounds of a symbol within [start_ms, end_ms], oldest first."""
    return [r for r in d.rm().funding_rounds(inst.symbol)
            if (start_ms is None or r.funding_time_ms >= start_ms) and (end_ms is None or r.funding_time_ms <= end_ms)]


def candles(d: ApiDeps, inst: Instrument, interval: str, start_ms: int | None, end_ms: int | None, limit: int,
            mark_prices: bool = False) -> list[Candle]:
    """Candles of the trades (or of the risk process's mark prices) the read model aggregated as they
    streamed (perpline.market.candles: the last MAX_CANDLES of each interval), oldest first."""
    if interval not in INTERVALS_MS:
        raise PerplineError(Code.MALFORMED, "interval")
    if not 1 <= limit <= MAX_CANDLES:
        raise PerplineError(Code.MALFORMED, f"limit: 1..{MAX_CANDLES}")
    return d.rm().candles(inst.symbol, interval, start_ms, end_ms, limit, mark_prices)


def band_reference(d: ApiDeps, inst: Instrument) -> str | None:
    """The price band's reference: the mark price (the last trade until the risk process publishes one)."""
    if d.readmodel is None:
        return None
    found = d.readmodel.mark(inst.symbol)
    if found is not None and not found.index_stale:
        return found.mark_price
    last = d.readmodel.trades(inst.symbol, 1)
    return last[-1].price if last else None


def market_bound(d: ApiDeps, inst: Instrument, order_type: str, side: str) -> str | None:
    """For a MARKET order: the protection bound from the book this API sees (None when that side is
    empty: the accounts processor then rejects it with NO_LIQUIDITY)."""
    if order_type != "MARKET" or d.readmodel is None:
        return None
    best = d.readmodel.best_opposite_ticks(inst.symbol, side)
    return inst.format_price(inst.market_bound_ticks(side, best)) if best > 0 else None


@dataclass(frozen=True)
class OrderCost:
    price_ticks: int
    qty_lots: int
    leverage: int
    margin: int
    fee: int
    filter_code: Code  # OK, or the instrument filter the order would fail


def order_cost(inst: Instrument, leverage: int, price: str, quantity: str | None, quote: str | None) -> OrderCost:
    """What an order would cost, by the accounts processor's own rules (perpline.accounts.margin): the
    quantity (given, or the most a `quote` amount buys at `price`, rounded down to the lot), the
    initial margin and the taker fee it would freeze, and the instrument's filter it would fail."""
    if not 1 <= leverage <= inst.max_leverage:
        raise PerplineError(Code.BAD_LEVERAGE, f"leverage must be 1..{inst.max_leverage}")
    price_ticks = inst.parse_price(price)
    if quantity is not None:
        qty_lots = inst.parse_qty(quantity)
    elif quote is not None:
        qty_lots = parse_amount(quote) // inst.notional(price_ticks, 1)
    else:
        raise PerplineError(Code.MISSING_FIELD, "quantity or quote")
    margin, fee = mg.order_reservation(inst, price_ticks, qty_lots, leverage)
    return OrderCost(price_ticks, qty_lots, leverage, margin, fee, inst.check_filters(price_ticks, qty_lots))
