"""Auto-deleveraging: when a liquidation finds no taker (ADL_AFTER_ATTEMPTS orders within 5 % of the
mark expired unfilled), the bankrupt position is traded with the opposite positions ranked first, at
its bankruptcy price, so the insurance fund pays nothing more for it (docs/risk.md). Pure: the runner
records and sends what `plan` returns.
"""

from __future__ import annotations

from fractions import Fraction

from perpline.contracts import messages as m
from perpline.contracts.instruments import Instrument
from perpline.risk import formulas as f
from perpline.risk.state import SymbolState

LAST = Fraction(-(10**18))


def score(inst: Instrument, size: int, cost: int, margin: int, mark: int) -> Fraction:
    """Binance's ranking: profit ratio x effective leverage for a profitable position, profit ratio /
    effective leverage for a losing one. Exact fractions: no float decides who is deleveraged."""
    value = inst.notional(mark, abs(size))
    pnl = value - cost if size > 0 else cost - value
    equity = margin + pnl
    if margin <= 0 or equity <= 0:
        return LAST
    ratio, leverage = Fraction(pnl, margin), Fraction(value, equity)
    return ratio * leverage if pnl > 0 else ratio / leverage


def quantile(mine: Fraction, same_side: list[Fraction]) -> int:
    """Binance's ADL indicator (positionRisk's `adl`), 0..4: the fifth of its side's ranking (`score`,
    `same_side` holds every position on that side, this one included) a position is in, 4 being the
    first deleveraged. A position with nothing left to rank (no margin or equity) shows 0."""
    if mine == LAST or not same_side:
        return 0
    above = sum(1 for other in same_side if other > mine)
    return 4 - min(4, 5 * above // len(same_side))


def plan(s: SymbolState, account: int, now_ms: int) -> m.AdlTrade | None:
    """The ADL trades for `account`'s position in `s`'s symbol, highest-ranked counterparties first (ties:
    lower account id), or None when the opposite side cannot take all of it."""
    found = s.positions.get(account)
    if found is None:
        return None
    size, cost, margin, version = found
    inst = s.inst
    ranked = sorted(((-score(inst, c_size, c_cost, c_margin, s.mark_ticks), acct, c_size)
                     for acct, (c_size, c_cost, c_margin, _) in s.positions.items()
                     if acct != account and c_size and (c_size > 0) != (size > 0)))
    remaining, fills = abs(size), []
    for _, acct, c_size in ranked:
        take = min(remaining, abs(c_size))
        fills.append((acct, inst.format_qty(take)))
        remaining -= take
        if not remaining:
            break
    if remaining:
        return None
    price = f.bankruptcy_ticks(inst, size, cost, margin)
    return m.AdlTrade(trace_id="", causation_id=f"mark:{inst.symbol}:{now_ms}", ts_ms=now_ms,
                      adl_id=f"{inst.symbol}:{account}:{version}", symbol=inst.symbol, bankrupt_account=account,
                      side="SELL" if size > 0 else "BUY", price=inst.format_price(price), fills=fills)  # type: ignore[arg-type]
