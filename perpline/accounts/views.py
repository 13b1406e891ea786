"""View formatting: the account.events and positions messages that show an account's balances, orders
and positions to the read models and the risk process, formatted from the integer state (decimal
strings on the wire). Nothing here changes the state but the versions the views carry.
"""

from __future__ import annotations

from perpline.accounts.journals import LOGICAL_ACCOUNT_EVENTS, LOGICAL_POSITIONS, Ctx
from perpline.accounts.state import AccountState, OrderState, Position
from perpline.contracts import messages as m
from perpline.contracts.instruments import Instrument
from perpline.contracts.units import format_amount, format_exact, format_fixed
from perpline.risk.formulas import PRICE_E8_DECIMALS, average_price_e8


def balance_changed(state: AccountState, ctx: Ctx, asset: str) -> None:
    bal = state.balance(asset)
    assert bal.order_margin >= 0 and bal.position_margin >= 0, "frozen amounts never go negative"
    bal.version += 1
    ctx.emit(LOGICAL_ACCOUNT_EVENTS, state.account_id, m.BalanceChanged(
        **ctx.meta(), account_id=state.account_id, asset=asset, available=format_amount(bal.available),
        order_margin=format_amount(bal.order_margin), position_margin=format_amount(bal.position_margin),
        wallet=format_amount(bal.wallet), version=bal.version))


def order_view(state: AccountState, inst: Instrument, order: OrderState) -> m.OrderView:
    avg_e8 = average_price_e8(inst, order.filled_value_tick_lots, order.filled_lots)
    avg = format_exact(avg_e8, PRICE_E8_DECIMALS, inst.price_decimals)
    return m.OrderView(
        order_id=order.order_id, client_order_id=order.client_order_id, account_id=state.account_id,
        symbol=order.symbol, side=order.side, order_type=order.order_type, time_in_force=order.time_in_force,  # type: ignore[arg-type]
        price=inst.format_price(order.price_ticks), quantity=inst.format_qty(order.qty_lots + order.unexecuted_lots),
        filled=inst.format_qty(order.filled_lots), avg_price=avg, status=order.status,  # type: ignore[arg-type]
        reduce_only=order.reduce_only, created_ms=order.created_ms, updated_ms=order.updated_ms,
        cum_quote=format_amount(order.filled_value_tick_lots * inst.amount_per_tick_lot),
        margin=format_amount(order.margin_frozen))


def order_changed(state: AccountState, ctx: Ctx, inst: Instrument, order: OrderState) -> None:
    ctx.emit(LOGICAL_ACCOUNT_EVENTS, state.account_id, m.OrderChanged(
        **ctx.meta(), account_id=state.account_id, order=order_view(state, inst, order)))


def entry_price(inst: Instrument, pos: Position) -> str:
    if pos.size_lots == 0:
        return format_fixed(0, inst.price_decimals)
    per_lot = pos.cost // abs(pos.size_lots)  # amount units per lot
    units = per_lot * inst.tick_units // inst.amount_per_tick_lot
    return format_fixed(units, inst.price_decimals)


def fill_recorded(state: AccountState, ctx: Ctx, inst: Instrument, leg: m.FillLeg, order: OrderState, fee_paid: int,
                  pnl: int) -> None:
    """A fill's views: the fill itself, then the order, the balance and the position it changed."""
    acct = state.account_id
    ctx.emit(LOGICAL_ACCOUNT_EVENTS, acct, m.FillRecorded(
        **ctx.meta(), account_id=acct, symbol=inst.symbol, trade_id=leg.trade_id, order_id=leg.order_id, side=leg.side,
        liquidity=leg.liquidity, price=leg.price, quantity=leg.quantity, fee=format_amount(fee_paid),
        fee_asset=inst.margin_asset, realized_pnl=format_amount(pnl)))
    order_changed(state, ctx, inst, order)
    balance_changed(state, ctx, inst.margin_asset)
    position_changed(state, ctx, inst)


def position_changed(state: AccountState, ctx: Ctx, inst: Instrument) -> None:
    """The position's new state for the read models (account.events) and the risk process (positions)."""
    pos, acct = state.positions[inst.symbol], state.account_id
    size = format_fixed(pos.size_lots * inst.lot_units, inst.qty_decimals)
    entry = entry_price(inst, pos)
    ctx.emit(LOGICAL_ACCOUNT_EVENTS, acct, m.PositionChanged(
        **ctx.meta(), account_id=acct, symbol=inst.symbol, size=size, entry_price=entry,
        margin=format_amount(pos.margin), leverage=pos.leverage, realized_pnl=format_amount(pos.realized_pnl),
        version=pos.version, cost=format_amount(pos.cost)))
    ctx.emit(LOGICAL_POSITIONS, inst.symbol, m.PositionSnapshot(
        **ctx.meta(), account_id=acct, symbol=inst.symbol, size=size, entry_price=entry,
        margin=format_amount(pos.margin), leverage=pos.leverage, version=pos.version, cost=format_amount(pos.cost)))
