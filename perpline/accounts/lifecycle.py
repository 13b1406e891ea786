"""Order lifecycle in the accounts processor: place (freeze margin and the taker fee), cancel, amend,
and the matcher's answers (fills, amends done, orders done) that release, settle and close.

Each command is a check that refuses or returns a plan, and an apply that carries the plan out
(accounts.handlers runs them): nothing is written before everything that can refuse was decided.
Settlement legs are idempotent by (symbol, seq, leg): `applied` keeps the last one per symbol.
"""

from __future__ import annotations

from dataclasses import dataclass

from perpline.accounts import margin as mg
from perpline.accounts import order_status as st
from perpline.accounts import perp
from perpline.accounts import requests as rq
from perpline.accounts.journals import (
    LOGICAL_ORDERS,
    LOGICAL_POSITIONS,
    Ctx,
    journal,
    realized_pnl_journal,
)
from perpline.accounts.ledger import platform_account, user_account
from perpline.accounts.memory import Memory
from perpline.accounts.positions import apply_fill, cut_reduce_only
from perpline.accounts.requests import Reject
from perpline.accounts.state import AccountState, OrderState, Position, RequestOutcome
from perpline.accounts.views import balance_changed, fill_recorded, order_changed
from perpline.contracts import ids
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.contracts.instruments import Instrument
from perpline.contracts.units import format_amount

# --- API requests ----------------------------------------------------------------------


@dataclass(slots=True)
class PlacePlan:
    cmd: m.PlaceOrder
    inst: Instrument
    price_ticks: int
    qty_lots: int
    unexecuted_lots: int
    leverage: int
    margin: int
    fee: int


def check_place(state: AccountState, cmd: m.PlaceOrder, memory: Memory) -> PlacePlan | RequestOutcome:
    existing = memory.order_id_of(cmd.client_order_id)
    if existing is not None:  # a resent order: the existing one, never a second
        return rq.accepted(existing, cmd.client_order_id)
    inst = rq.instrument(cmd.symbol)
    price_ticks, qty_lots = rq.order_numbers(inst, cmd)
    if len(state.orders) >= inst.max_open_orders:
        raise Reject(Code.TOO_MANY_OPEN_ORDERS, f"at most {inst.max_open_orders} open orders")
    leverage = state.leverage.get(inst.symbol, inst.default_leverage)
    unexecuted_lots = 0
    if cmd.reduce_only:
        qty_lots, unexecuted_lots = rq.reduce_only_split(state, inst, cmd, qty_lots)
        margin, fee = 0, mg.fee(inst.notional(price_ticks, qty_lots), inst.taker_fee_e8)
    else:
        rq.check_position_cap(state, inst, cmd.side, inst.notional(price_ticks, qty_lots))
        margin, fee = mg.order_reservation(inst, price_ticks, qty_lots, leverage)
    available = rq.available(state, inst.margin_asset)
    if available < margin + fee:
        raise Reject(Code.INSUFFICIENT_BALANCE,
                     f"order needs {format_amount(margin + fee)} {inst.margin_asset}, available {format_amount(available)}")
    return PlacePlan(cmd, inst, price_ticks, qty_lots, unexecuted_lots, leverage, margin, fee)


def apply_place(state: AccountState, plan: PlacePlan, ctx: Ctx) -> RequestOutcome:
    cmd, inst = plan.cmd, plan.inst
    state.order_seq += 1
    order = OrderState(
        order_id=ids.order_id_for(state.account_id, state.order_seq), client_order_id=cmd.client_order_id,
        symbol=inst.symbol, side=cmd.side, order_type=cmd.order_type, time_in_force=cmd.time_in_force,
        price_ticks=plan.price_ticks, qty_lots=plan.qty_lots, leaves_lots=plan.qty_lots, leverage=plan.leverage,
        margin_frozen=plan.margin, fee_frozen=plan.fee, created_ms=ctx.ts_ms, updated_ms=ctx.ts_ms,
        reduce_only=cmd.reduce_only, unexecuted_lots=plan.unexecuted_lots)
    _freeze(state, ctx, inst, order)
    tif = rq.MARKET_TIFS[cmd.time_in_force] if cmd.order_type == "MARKET" else cmd.time_in_force
    ctx.emit(LOGICAL_ORDERS, inst.symbol, m.NewOrder(
        **ctx.meta(), order_id=order.order_id, account_id=state.account_id, symbol=inst.symbol, side=cmd.side,
        order_type="LIMIT", time_in_force=tif, price=inst.format_price(plan.price_ticks),  # type: ignore[arg-type]
        quantity=inst.format_qty(plan.qty_lots), client_order_id=cmd.client_order_id, stp=cmd.stp,
        reduce_only=cmd.reduce_only))
    return rq.accepted(order.order_id, cmd.client_order_id)


def _freeze(state: AccountState, ctx: Ctx, inst: Instrument, order: OrderState) -> None:
    bal = state.balance(inst.margin_asset)
    amount = order.margin_frozen + order.fee_frozen
    bal.available -= amount
    bal.order_margin += amount
    state.orders[order.order_id] = order
    journal(ctx, state, "ORDER_MARGIN_FROZEN", f"order:{order.order_id}", inst.margin_asset, inst.symbol).transfer(
        user_account(state.account_id, "SPOT"), user_account(state.account_id, "ORDER_MARGIN"), amount)
    balance_changed(state, ctx, inst.margin_asset)
    order_changed(state, ctx, inst, order)


def check_cancel(state: AccountState, cmd: m.CancelOrder, memory: Memory) -> OrderState:
    return rq.find_order(state, cmd, memory)


def apply_cancel(state: AccountState, order: OrderState, ctx: Ctx) -> RequestOutcome:
    ctx.emit(LOGICAL_ORDERS, order.symbol, m.CancelRequest(
        **ctx.meta(), order_id=order.order_id, account_id=state.account_id, symbol=order.symbol))
    return rq.accepted(order.order_id, order.client_order_id)


def check_cancel_all(state: AccountState, cmd: m.CancelAll, memory: Memory) -> Instrument:
    return rq.instrument(cmd.symbol)


def apply_cancel_all(state: AccountState, inst: Instrument, ctx: Ctx) -> RequestOutcome:
    order_ids = sorted(oid for oid, o in state.orders.items() if o.symbol == inst.symbol)
    for order_id in order_ids:
        ctx.emit(LOGICAL_ORDERS, inst.symbol, m.CancelRequest(
            **ctx.meta(), order_id=order_id, account_id=state.account_id, symbol=inst.symbol))
    return RequestOutcome(True, 0, "", None, None, order_ids)


@dataclass(slots=True)
class AmendPlan:
    cmd: m.AmendOrder
    order: OrderState
    inst: Instrument
    price_ticks: int
    qty_lots: int
    extra: int  # more to freeze for the new terms (what they need less is released when the matcher answers)


def check_amend(state: AccountState, cmd: m.AmendOrder, memory: Memory) -> AmendPlan:
    order = rq.find_order(state, cmd, memory)
    if order.amend_pending or order.cut:
        raise Reject(Code.MALFORMED, "the order is being amended or cancelled; wait for that first")
    if order.order_type != "LIMIT":
        raise Reject(Code.BAD_ORDER_TYPE, "only LIMIT orders can be amended")
    inst = rq.instrument(cmd.symbol)
    price_ticks = inst.parse_price(cmd.price) if cmd.price is not None else order.price_ticks
    qty_lots = inst.parse_qty(cmd.quantity)
    if price_ticks != order.price_ticks:
        rq.check_band(inst, price_ticks, cmd.band_reference)
    if qty_lots <= order.filled_lots:
        raise Reject(Code.QTY_TOO_SMALL, f"quantity must exceed the filled {inst.format_qty(order.filled_lots)}")
    rq.check_filters(inst, price_ticks if not order.reduce_only else 0, qty_lots)
    new_leaves = qty_lots - order.filled_lots
    if order.reduce_only and new_leaves > order.leaves_lots:
        rq.check_reduce_only(state, inst, order.side, new_leaves - order.leaves_lots)
    if not order.reduce_only:
        rq.check_position_cap(state, inst, order.side, inst.notional(price_ticks, new_leaves), order.order_id)
    margin, fee = rq.reservation(inst, order, price_ticks, new_leaves)
    extra = max(0, margin + fee - order.margin_frozen - order.fee_frozen)
    if rq.available(state, inst.margin_asset) < extra:
        raise Reject(Code.INSUFFICIENT_BALANCE, f"the amend needs {format_amount(extra)} more {inst.margin_asset}")
    return AmendPlan(cmd, order, inst, price_ticks, qty_lots, extra)


def apply_amend(state: AccountState, plan: AmendPlan, ctx: Ctx) -> RequestOutcome:
    order, inst, extra = plan.order, plan.inst, plan.extra
    if extra:
        bal = state.balance(inst.margin_asset)
        bal.available -= extra
        bal.order_margin += extra
        order.margin_frozen += extra
        journal(ctx, state, "ORDER_MARGIN_FROZEN", f"amend:{order.order_id}:{plan.cmd.request_id}", inst.margin_asset,
                inst.symbol).transfer(user_account(state.account_id, "SPOT"),
                                      user_account(state.account_id, "ORDER_MARGIN"), extra)
        balance_changed(state, ctx, inst.margin_asset)
    order.amend_pending = True
    ctx.emit(LOGICAL_ORDERS, inst.symbol, m.AmendRequest(
        **ctx.meta(), order_id=order.order_id, account_id=state.account_id, symbol=inst.symbol,
        price=inst.format_price(plan.price_ticks), quantity=inst.format_qty(plan.qty_lots)))
    return rq.accepted(order.order_id, order.client_order_id)


# --- settlement legs -------------------------------------------------------------------


def _applied(state: AccountState, symbol: str, position: int) -> bool:
    return state.applied.get(symbol, -1) >= position


@dataclass(slots=True)
class AmendDonePlan:
    cmd: m.AmendDone
    order: OrderState | None  # None: the order finished meanwhile and released everything it held
    inst: Instrument | None
    terms: tuple[int, int, int] | None  # the matcher's (price_ticks, qty_lots, leaves_lots); None: refused


def check_amend_done(state: AccountState, cmd: m.AmendDone) -> AmendDonePlan | None:
    if _applied(state, cmd.symbol, cmd.seq * 2):
        return None
    order = state.orders.get(cmd.order_id)
    if order is None:
        return AmendDonePlan(cmd, None, None, None)
    inst = rq.instrument(cmd.symbol)
    terms = None
    if cmd.ok:
        terms = inst.parse_price(cmd.price), inst.parse_qty(cmd.quantity), inst.parse_qty(cmd.leaves, allow_zero=True)
        assert terms[1] == order.filled_lots + terms[2], "amend: matcher and account disagree on fills"
    return AmendDonePlan(cmd, order, inst, terms)


def apply_amend_done(state: AccountState, plan: AmendDonePlan, ctx: Ctx) -> None:
    """The matcher applied or refused an amend: hold exactly what the order now needs."""
    cmd, order, inst = plan.cmd, plan.order, plan.inst
    state.applied[cmd.symbol] = cmd.seq * 2
    if order is None or inst is None:
        return
    if plan.terms is not None:
        order.price_ticks, order.qty_lots, order.leaves_lots = plan.terms
    margin, fee = rq.reservation(inst, order, order.price_ticks, order.leaves_lots)  # refused: the old terms
    release = order.margin_frozen + order.fee_frozen - margin - fee
    order.margin_frozen, order.fee_frozen = margin, fee
    order.amend_pending = False
    order.updated_ms = ctx.ts_ms
    bal = state.balance(inst.margin_asset)
    bal.order_margin -= release
    bal.available += release
    spot, frozen = user_account(state.account_id, "SPOT"), user_account(state.account_id, "ORDER_MARGIN")
    builder = journal(ctx, state, "ORDER_MARGIN_RELEASED", f"amend:{order.order_id}:{cmd.seq}", inst.margin_asset,
                      inst.symbol)
    if release >= 0:
        builder.transfer(frozen, spot, release)
    else:  # fills while the amend was out released pro rata: hold the difference again
        builder.transfer(spot, frozen, -release)
    balance_changed(state, ctx, inst.margin_asset)
    order_changed(state, ctx, inst, order)


@dataclass(slots=True)
class FillPlan:
    leg: m.FillLeg
    order: OrderState
    inst: Instrument
    price_ticks: int
    qty_lots: int
    new_status: str


def check_fill(state: AccountState, leg: m.FillLeg) -> FillPlan | None:
    if _applied(state, leg.symbol, _leg_position(leg)):
        return None
    order = state.orders.get(leg.order_id)
    inst = rq.instrument(leg.symbol)
    if order is None:  # never applied: the processor dead-letters it and alarms
        raise Reject(Code.UNKNOWN_ORDER, f"fill for unknown order {leg.order_id}")
    price_ticks, qty_lots = inst.parse_price(leg.price), inst.parse_qty(leg.quantity)
    event = "fill" if order.leaves_lots == qty_lots else "partial_fill"
    if event == "fill" and order.unexecuted_lots:
        event = "expire"  # a reduce-only order's quantity beyond the position was never executed
    new_status = st.transition(order.status, event)  # raises IllegalTransition: a bug upstream
    assert qty_lots <= order.leaves_lots, "fill larger than the order's open quantity"
    return FillPlan(leg, order, inst, price_ticks, qty_lots, new_status)


def _leg_position(leg: m.FillLeg) -> int:
    return leg.seq * 2 + (1 if leg.liquidity == "TAKER" else 0)


def apply_fill_leg(state: AccountState, plan: FillPlan, ctx: Ctx) -> None:
    leg, order, inst, price_ticks, qty_lots = plan.leg, plan.order, plan.inst, plan.price_ticks, plan.qty_lots
    state.applied[leg.symbol] = _leg_position(leg)
    release = _release_for_fill(order, qty_lots)
    fee_rate = inst.maker_fee_e8 if leg.liquidity == "MAKER" else inst.taker_fee_e8
    fee_paid = 0 if order.liquidation else mg.fee(inst.notional(price_ticks, qty_lots), fee_rate)
    pos = state.positions.setdefault(inst.symbol, Position(symbol=inst.symbol))
    closed_margin, pnl, new_margin = apply_fill(inst, pos, order.leverage, leg.side, price_ticks, qty_lots)
    _settle_balances(state, ctx, inst, leg, release, fee_paid, closed_margin, pnl, new_margin)
    if order.liquidation:
        perp.settle_liquidation_fill(state, ctx, inst, leg, order, closed_margin, pnl)
    order.status, order.updated_ms = plan.new_status, ctx.ts_ms
    order.filled_lots += qty_lots
    order.leaves_lots -= qty_lots
    order.filled_value_tick_lots += price_ticks * qty_lots
    fill_recorded(state, ctx, inst, leg, order, fee_paid, pnl)
    if plan.new_status in st.TERMINAL:
        _close_order(state, ctx, inst, order)
    cut_reduce_only(state, ctx, inst)


def _release_for_fill(order: OrderState, qty_lots: int) -> int:
    margin = mg.pro_rata(order.margin_frozen, qty_lots, order.leaves_lots)
    fee = mg.pro_rata(order.fee_frozen, qty_lots, order.leaves_lots)
    order.margin_frozen -= margin
    order.fee_frozen -= fee
    return margin + fee


def _settle_balances(state: AccountState, ctx: Ctx, inst: Instrument, leg: m.FillLeg, release: int, fee_paid: int,
                     closed_margin: int, pnl: int, new_margin: int) -> None:
    asset, acct, leg_id = inst.margin_asset, state.account_id, ids.fill_leg_id(leg.symbol, leg.seq, leg.liquidity)
    bal = state.balance(asset)
    bal.order_margin -= release
    bal.position_margin += new_margin - closed_margin
    bal.available += release - fee_paid + closed_margin + pnl - new_margin
    spot, order_m, pos_m = (user_account(acct, k) for k in ("SPOT", "ORDER_MARGIN", "POSITION_MARGIN"))
    (journal(ctx, state, "TRADE_SETTLED", leg_id, asset, inst.symbol)
        .transfer(order_m, spot, release).transfer(pos_m, spot, closed_margin).transfer(spot, pos_m, new_margin))
    journal(ctx, state, "TRADE_FEE", leg_id, asset, inst.symbol).transfer(spot, platform_account("FEE_REVENUE"), fee_paid)
    realized_pnl_journal(ctx, state, leg_id, asset, inst.symbol, pnl)


@dataclass(slots=True)
class DonePlan:
    cmd: m.OrderDone
    order: OrderState
    inst: Instrument
    new_status: str


def check_done(state: AccountState, cmd: m.OrderDone) -> DonePlan | None:
    if _applied(state, cmd.symbol, cmd.seq * 2):
        return None
    order = state.orders.get(cmd.order_id)
    if order is None:
        raise Reject(Code.UNKNOWN_ORDER, f"order {cmd.order_id} closed by the matcher is unknown here")
    event = st.DONE_EVENTS.get(cmd.status)
    if event is None:
        raise Reject(Code.MALFORMED, f"an order cannot end {cmd.status}")
    new_status = st.transition(order.status, event)
    return DonePlan(cmd, order, rq.instrument(cmd.symbol), new_status)


def apply_done(state: AccountState, plan: DonePlan, ctx: Ctx) -> None:
    cmd, order, inst = plan.cmd, plan.order, plan.inst
    state.applied[cmd.symbol] = cmd.seq * 2
    order.status = plan.new_status
    order.updated_ms = ctx.ts_ms
    amount = order.margin_frozen + order.fee_frozen
    order.margin_frozen = order.fee_frozen = 0
    bal = state.balance(inst.margin_asset)
    bal.order_margin -= amount
    bal.available += amount
    journal(ctx, state, "ORDER_MARGIN_RELEASED", f"order:{order.order_id}:{cmd.status}", inst.margin_asset,
            inst.symbol).transfer(user_account(state.account_id, "ORDER_MARGIN"), user_account(state.account_id, "SPOT"),
                                  amount)
    balance_changed(state, ctx, inst.margin_asset)
    order_changed(state, ctx, inst, order)
    _close_order(state, ctx, inst, order)


def _close_order(state: AccountState, ctx: Ctx, inst: Instrument, order: OrderState) -> None:
    assert order.margin_frozen == 0 and order.fee_frozen == 0, "a closed order holds nothing frozen"
    if order.liquidation:
        ctx.emit(LOGICAL_POSITIONS, order.symbol, m.LiquidationOrderDone(
            **ctx.meta(), account_id=state.account_id, symbol=order.symbol, order_id=order.order_id,
            client_order_id=order.client_order_id, filled=inst.format_qty(order.filled_lots)))
    del state.orders[order.order_id]
    ctx.memory.remember_closed(order.client_order_id, order.order_id)
