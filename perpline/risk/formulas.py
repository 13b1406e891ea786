"""The perpetual formulas, in integers: one place for each (docs/risk.md has a worked example of each).

Prices are ticks, rates parts per 1e8 (`_e8`), amounts minor units (1e-8 of the margin asset),
sizes signed lots (positive long). Rounding: what a user pays rounds up, what a user receives
rounds down (perpline.contracts.units), so the platform never creates money by rounding.
"""

from __future__ import annotations

from perpline.contracts.instruments import Instrument
from perpline.contracts.units import (
    RATE_SCALE,
    apply_rate_charge,
    apply_rate_credit,
    div_ceil,
    div_floor,
)


def clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def median3(a: int, b: int, c: int) -> int:
    return sorted((a, b, c))[1]


# --- premium, funding rate, mark -------------------------------------------------------------


def premium_e8(index_ticks: int, bid_ticks: int, ask_ticks: int) -> int:
    """Binance's premium index with the best bid/ask as impact prices:
    (max(0, bid - index) - max(0, index - ask)) / index. 0 when a side of the book is empty."""
    if index_ticks <= 0 or bid_ticks <= 0 or ask_ticks <= 0:
        return 0
    above = max(0, bid_ticks - index_ticks)
    below = max(0, index_ticks - ask_ticks)
    numerator = (above - below) * RATE_SCALE
    return numerator // index_ticks if numerator >= 0 else -((-numerator) // index_ticks)


def funding_rate_e8(inst: Instrument, premiums_e8: list[int]) -> int:
    """rate = P + clamp(interest - P, -clamp, +clamp), capped at +/-cap; P = the average premium of the
    interval (truncated toward zero). No samples: the interest rate alone."""
    if premiums_e8:
        total = sum(premiums_e8)
        average = total // len(premiums_e8) if total >= 0 else -((-total) // len(premiums_e8))
    else:
        average = 0
    rate = average + clamp(inst.interest_e8 - average, -inst.funding_clamp_e8, inst.funding_clamp_e8)
    return clamp(rate, -inst.funding_cap_e8, inst.funding_cap_e8)


def mark_ticks(index_ticks: int, bid_ticks: int, ask_ticks: int, last_ticks: int, rate_e8: int,
               ms_to_funding: int, interval_ms: int, basis_avg_ticks: int) -> int:
    """Binance's mark: the median of
      price1 = index x (1 + rate x time to funding / interval),
      price2 = index + moving average of the basis (mid - index),
      the last trade price.
    Without a last trade or a two-sided book the missing term falls back to the index."""
    assert index_ticks > 0 and interval_ms > 0
    price1 = index_ticks + index_ticks * rate_e8 * ms_to_funding // (RATE_SCALE * interval_ms)
    price2 = index_ticks + basis_avg_ticks if bid_ticks > 0 and ask_ticks > 0 else index_ticks
    last = last_ticks if last_ticks > 0 else index_ticks
    return max(1, median3(price1, price2, last))


# --- funding payments -------------------------------------------------------------------------


def funding_payment(inst: Instrument, size_lots: int, mark: int, rate_e8: int) -> int:
    """What one position pays at a funding time (negative: receives): size x mark x rate. A positive
    rate makes longs pay; payers round up, receivers round down."""
    notional = inst.notional(mark, abs(size_lots))
    pays = (size_lots > 0) == (rate_e8 > 0)
    if size_lots == 0 or rate_e8 == 0:
        return 0
    if pays:
        return apply_rate_charge(notional, abs(rate_e8))
    return -apply_rate_credit(notional, abs(rate_e8))


# --- valuation: one formula per number, for the API (v1, fapi), the audit and the risk process ------


PRICE_E8_DECIMALS = 8  # an exact average price: 1e-8 of the quote asset


def average_price_e8(inst: Instrument, value_tick_lots: int, qty_lots: int) -> int:
    """The average fill price, sum(price x qty) / qty, in 1e-8 of the quote asset, rounded down (an
    order's avgPrice: exact to 8 decimals, 49923.475 and not 49923.47). 0 before any fill."""
    assert inst.price_decimals <= PRICE_E8_DECIMALS and qty_lots >= 0
    if qty_lots == 0:
        return 0
    scale: int = 10 ** (PRICE_E8_DECIMALS - inst.price_decimals)
    return value_tick_lots * inst.tick_units * scale // qty_lots


def unrealized_pnl(inst: Instrument, size_lots: int, cost: int, mark: int) -> int:
    """A position's unrealised PnL at `mark` ticks, amount units: long value - cost, short cost - value,
    from the exact entry value (cost), not a rounded entry price. Exact: no rounding. 0: no position."""
    if size_lots == 0:
        return 0
    value = inst.notional(mark, abs(size_lots))
    return value - cost if size_lots > 0 else cost - value


def maint_margin(inst: Instrument, size_lots: int, cost: int, mark: int) -> int:
    """Maintenance margin, amount units: notional at the mark x mmr - maint_amount, the bracket chosen
    by the entry value as in liquidation_ticks (the same threshold the liquidation price solves for);
    rounded up (a requirement), never below 0."""
    if size_lots == 0:
        return 0
    bracket = inst.bracket_for(cost)
    required = div_ceil(inst.notional(mark, abs(size_lots)) * bracket.maint_margin_e8, RATE_SCALE)
    return max(0, required - bracket.maint_amount)


# --- liquidation -----------------------------------------------------------------------------


def liquidation_ticks(inst: Instrument, size_lots: int, cost: int, margin: int) -> int:
    """Isolated liquidation price: where margin + unrealised PnL falls to the maintenance margin
    (notional x mmr - maint_amount; Binance's formula, bracket chosen by the entry value):
      long:  (cost - margin - maint_amount) / (size x (1 - mmr))
      short: (cost + margin + maint_amount) / (size x (1 + mmr))
    in ticks, rounded toward the entry (a long triggers no later, a short no later). 0: never (long
    fully collateralised) or no position."""
    if size_lots == 0:
        return 0
    bracket = inst.bracket_for(cost)
    per_tick = abs(size_lots) * inst.amount_per_tick_lot
    if size_lots > 0:
        numerator = (cost - margin - bracket.maint_amount) * RATE_SCALE
        if numerator <= 0:
            return 0
        return div_ceil(numerator, per_tick * (RATE_SCALE - bracket.maint_margin_e8))
    numerator = (cost + margin + bracket.maint_amount) * RATE_SCALE
    return max(1, div_floor(numerator, per_tick * (RATE_SCALE + bracket.maint_margin_e8)))


def liquidation_close_lots(inst: Instrument, size_lots: int, cost: int) -> int:
    """How much of a crossed position one liquidation closes: a position whose entry value lies above
    the first bracket is cut down to the cap of the bracket below its own (partial liquidation: the
    rest needs a lower maintenance rate, and its liquidation price is computed again); one in the
    first bracket is closed whole. At least one lot."""
    size = abs(size_lots)
    brackets = inst.brackets
    index = brackets.index(inst.bracket_for(cost)) if brackets else 0
    if index == 0 or cost <= 0:
        return size
    keep = brackets[index - 1].notional_cap * size // cost  # lots whose entry value fits the lower cap
    return max(1, size - keep)


def bankruptcy_ticks(inst: Instrument, size_lots: int, cost: int, margin: int) -> int:
    """The price at which the position's margin is exactly used up: long (cost - margin) / size rounded
    up, short (cost + margin) / size rounded down; at least one tick."""
    per_tick = abs(size_lots) * inst.amount_per_tick_lot
    assert per_tick > 0
    if size_lots > 0:
        return max(1, div_ceil(max(0, cost - margin), per_tick))
    return max(1, div_floor(cost + margin, per_tick))


def crossed(size_lots: int, liq_ticks: int, mark: int) -> bool:
    if size_lots > 0:
        return liq_ticks > 0 and mark <= liq_ticks
    return size_lots < 0 and mark >= liq_ticks


# --- leverage brackets: the position a leverage may carry ----------------------------------------


def side_exposure_notional(position_signed_notional: int, open_side_notional: int, side: str) -> int:
    """The position one side would leave if all its open orders filled, as a notional (amount units):
    BUY |position + open buys|, SELL |position - open sells|. `position_signed_notional` is the position
    at its entry value (cost), positive long; `open_side_notional` the side's orders at their limit
    prices. Exact: no rounding. The larger side is what Binance checks against the leverage's cap
    (Instrument.max_notional_at); docs/risk.md, "Leverage brackets"."""
    assert open_side_notional >= 0 and side in ("BUY", "SELL")
    if side == "BUY":
        return abs(position_signed_notional + open_side_notional)
    return abs(position_signed_notional - open_side_notional)
