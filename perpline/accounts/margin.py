"""Margin and fee formulas: the one place they are written.

All amounts are integer minor units (1e-8 of the margin asset); rates are parts per 1e8.
Rounding follows perpline.contracts.units: what a user pays rounds up.
"""

from __future__ import annotations

from perpline.contracts.instruments import Instrument
from perpline.contracts.units import apply_rate_charge, div_ceil


def initial_margin(notional: int, leverage: int) -> int:
    assert notional >= 0 and leverage >= 1
    return div_ceil(notional, leverage)


def fee(notional: int, fee_e8: int) -> int:
    assert notional >= 0 and fee_e8 >= 0
    return apply_rate_charge(notional, fee_e8)


def order_reservation(inst: Instrument, price_ticks: int, qty_lots: int, leverage: int) -> tuple[int, int]:
    """(margin, fee) frozen when an order is placed: as if it opens a position, fee at the taker rate."""
    notional = inst.notional(price_ticks, qty_lots)
    return initial_margin(notional, leverage), fee(notional, inst.taker_fee_e8)


def pro_rata(total: int, part: int, whole: int) -> int:
    """The share of `total` for `part` of `whole`, rounded down; the last part takes the rest."""
    assert 0 <= part <= whole and whole > 0
    return total if part == whole else total * part // whole
