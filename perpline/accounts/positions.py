"""Position maths: what a fill does to an isolated position (close first, then open; a flip is both),
how much an order can close, how large a side's exposure is, and the reduce-only orders a smaller
position no longer covers. The formulas of margin and fees are in `margin`; this module applies them.
"""

from __future__ import annotations

from perpline.accounts import margin as mg
from perpline.accounts.journals import LOGICAL_ORDERS, Ctx
from perpline.accounts.state import AccountState, Position
from perpline.contracts import messages as m
from perpline.contracts.instruments import Instrument
from perpline.risk.formulas import side_exposure_notional


def reduce_only_reserved(state: AccountState, symbol: str, side: str) -> int:
    """Open quantity of the account's reduce-only orders on `side` of `symbol`, lots."""
    return sum(o.leaves_lots for o in state.orders.values() if o.reduce_only and o.symbol == symbol and o.side == side)


def closable(state: AccountState, symbol: str, side: str) -> int:
    """How much an order on `side` can close: the opposite position's size, lots (0 if none)."""
    pos = state.positions.get(symbol)
    size = pos.size_lots if pos is not None else 0
    if side == "SELL":
        return max(size, 0)
    return max(-size, 0)


def reduce_only_room(state: AccountState, inst: Instrument, side: str) -> int:
    """Lots a new reduce-only order on `side` can still close: the opposite position less what the
    account's open reduce-only orders on that side already cover."""
    return closable(state, inst.symbol, side) - reduce_only_reserved(state, inst.symbol, side)


def exposure(state: AccountState, inst: Instrument, side: str, extra_notional: int = 0,
             without_order_id: int | None = None) -> int:
    """The position `side` would leave if the account's open orders on it (but `without_order_id`), plus
    `extra_notional` more, all filled (formulas.side_exposure_notional): the position at its entry
    value, orders at their limit prices (a MARKET order at its protection bound). Reduce-only orders
    are left out: they can only close."""
    pos = state.positions.get(inst.symbol)
    position = 0 if pos is None else (pos.cost if pos.size_lots > 0 else -pos.cost)
    orders = sum(inst.notional(o.price_ticks, o.leaves_lots) for o in state.orders.values()
                 if o.symbol == inst.symbol and o.side == side and not o.reduce_only and o.order_id != without_order_id)
    return side_exposure_notional(position, orders + extra_notional, side)


def apply_fill(inst: Instrument, pos: Position, leverage: int, side: str, price_ticks: int,
               qty_lots: int) -> tuple[int, int, int]:
    """Apply a fill of `side` to `pos`; returns (margin released by the close part, realised PnL, margin of
    the open part, taken at `leverage`)."""
    signed = qty_lots if side == "BUY" else -qty_lots
    close_lots = min(qty_lots, abs(pos.size_lots)) if pos.size_lots * signed < 0 else 0
    open_lots = qty_lots - close_lots
    closed_margin = pnl = new_margin = 0
    if close_lots:
        size = abs(pos.size_lots)
        cost_closed = mg.pro_rata(pos.cost, close_lots, size)
        closed_margin = mg.pro_rata(pos.margin, close_lots, size)
        value = inst.notional(price_ticks, close_lots)
        pnl = value - cost_closed if pos.size_lots > 0 else cost_closed - value
        pos.cost -= cost_closed
        pos.margin -= closed_margin
        pos.realized_pnl += pnl
        pos.size_lots += close_lots if pos.size_lots < 0 else -close_lots
    if open_lots:
        notional = inst.notional(price_ticks, open_lots)
        new_margin = mg.initial_margin(notional, leverage)
        pos.cost += notional
        pos.margin += new_margin
        pos.size_lots += open_lots if signed > 0 else -open_lots
        pos.leverage = leverage
    if pos.size_lots == 0:
        assert pos.cost == 0 and pos.margin == 0, "a flat position holds no cost or margin"
    pos.version += 1
    return closed_margin, pnl, new_margin


def cut_reduce_only(state: AccountState, ctx: Ctx, inst: Instrument) -> None:
    """After a position change: cancel reduce-only orders (newest first) that could now open or grow a
    position, as Binance does; their margin is released when the matcher confirms."""
    for side in ("BUY", "SELL"):
        excess = reduce_only_reserved(state, inst.symbol, side) - closable(state, inst.symbol, side)
        newest_first = sorted((o for o in state.orders.values()
                               if o.reduce_only and o.symbol == inst.symbol and o.side == side and not o.cut),
                              key=lambda o: o.order_id, reverse=True)
        for order in newest_first:
            if excess <= 0:
                break
            order.cut = True
            excess -= order.leaves_lots
            ctx.emit(LOGICAL_ORDERS, inst.symbol, m.CancelRequest(
                **ctx.meta(), order_id=order.order_id, account_id=state.account_id, symbol=inst.symbol))


def cut_for_liquidation(state: AccountState, ctx: Ctx, inst: Instrument) -> None:
    """A liquidation first cancels every order of the account in the symbol (once each)."""
    for order_id in sorted(oid for oid, o in state.orders.items() if o.symbol == inst.symbol and not o.cut):
        state.orders[order_id].cut = True
        ctx.emit(LOGICAL_ORDERS, inst.symbol, m.CancelRequest(
            **ctx.meta(), order_id=order_id, account_id=state.account_id, symbol=inst.symbol))

