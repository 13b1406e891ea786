"""Request checks: every reason the accounts processor refuses a command, as functions that read the
state and never change it.

A handler is two phases (accounts.handlers): a check, built from these functions, that either refuses
(raises `Reject`, or `UnitError` for a number no instrument accepts) or returns a plan; then an apply
that carries the plan out and has nothing left to refuse. A refusal therefore always leaves the state
and the outputs exactly as they were.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perpline.accounts import margin as mg
from perpline.accounts.positions import exposure, reduce_only_room
from perpline.accounts.reject import Reject
from perpline.accounts.state import AccountState, OrderState, RequestOutcome
from perpline.contracts import ids
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.contracts.instruments import Instrument, load_catalog
from perpline.contracts.units import format_amount, parse_amount

if TYPE_CHECKING:
    from perpline.accounts.memory import Memory

SUPPORTED_ORDER_TYPES = ("LIMIT", "MARKET")
MARKET_TIFS = {"GTC": "IOC", "IOC": "IOC", "FOK": "FOK"}  # a MARKET order reaches the matcher as this limit TIF


def accepted(order_id: int | None = None, client_order_id: str | None = None) -> RequestOutcome:
    return RequestOutcome(True, 0, "", order_id, client_order_id)


def asset_of(asset: str) -> str:
    if asset not in load_catalog().assets:
        raise Reject(Code.UNKNOWN_ASSET, f"unknown asset {asset!r}")
    return asset


def positive_amount(text: str) -> int:
    amount = parse_amount(text)
    if amount <= 0:
        raise Reject(Code.NOT_POSITIVE, "amount must be greater than zero")
    return amount


def instrument(symbol: str) -> Instrument:
    inst = load_catalog().get(symbol)
    if inst is None or inst.symbol != symbol:
        raise Reject(Code.UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}")
    return inst


def order_numbers(inst: Instrument, cmd: m.PlaceOrder) -> tuple[int, int]:
    """(price_ticks, qty_lots): the limit price, or for MARKET the protection bound the API set."""
    if cmd.order_type not in SUPPORTED_ORDER_TYPES:
        raise Reject(Code.BAD_ORDER_TYPE, f"order type {cmd.order_type} is not supported")
    if not cmd.client_order_id or len(cmd.client_order_id) > ids.MAX_CLIENT_ORDER_ID_CHARS:
        raise Reject(Code.MALFORMED, f"client order id must be 1 to {ids.MAX_CLIENT_ORDER_ID_CHARS} characters")
    if cmd.order_type == "MARKET":
        if cmd.time_in_force not in MARKET_TIFS:
            raise Reject(Code.BAD_TIME_IN_FORCE, f"a MARKET order cannot be {cmd.time_in_force}")
        if cmd.price is not None:
            raise Reject(Code.MALFORMED, "a MARKET order takes no price")
        if cmd.price_bound is None:
            raise Reject(Code.NO_LIQUIDITY, "no opposite liquidity for a MARKET order")
        price_text = cmd.price_bound
    else:
        if cmd.price is None:
            raise Reject(Code.MISSING_FIELD, "a limit order needs a price")
        price_text = cmd.price
    price_ticks, qty_lots = inst.parse_price(price_text), inst.parse_qty(cmd.quantity)
    if cmd.order_type == "LIMIT":
        check_band(inst, price_ticks, cmd.band_reference)
    check_filters(inst, price_ticks if not cmd.reduce_only else 0, qty_lots)
    return price_ticks, qty_lots


def check_filters(inst: Instrument, price_ticks: int, qty_lots: int) -> None:
    code = inst.check_filters(price_ticks, qty_lots)
    if code != Code.OK:
        raise Reject(code, f"order fails the {code.name} filter of {inst.symbol}")


def check_band(inst: Instrument, price_ticks: int, reference: str | None) -> None:
    if reference is None:
        return
    low, high = inst.band_ticks(inst.parse_price(reference))
    if not low <= price_ticks <= high:
        raise Reject(Code.PRICE_OUT_OF_BAND, f"limit price must be within {inst.format_price(low)} and "
                                             f"{inst.format_price(high)} (the price band around {reference})")


def check_reduce_only(state: AccountState, inst: Instrument, side: str, qty_lots: int) -> None:
    """An amend may not raise a reduce-only order beyond what it can close."""
    room = reduce_only_room(state, inst, side)
    if qty_lots > room:
        raise Reject(Code.REDUCE_ONLY_REJECTED,
                     f"reduce-only {side} of {inst.format_qty(qty_lots)} exceeds the closable {inst.format_qty(max(room, 0))}")


def reduce_only_split(state: AccountState, inst: Instrument, cmd: m.PlaceOrder, qty_lots: int) -> tuple[int, int]:
    """(lots to execute, lots never executed) of a new reduce-only order, as Binance: refused (-2022)
    only when it can close nothing (no opposite position, or it is all covered by other reduce-only
    orders); larger than what it can close, it is reduced to that. A resting order (LIMIT GTC/GTX)
    simply has the reduced quantity; an IOC, FOK or MARKET keeps the client's quantity and the excess
    is not executed (the order ends EXPIRED after closing the position)."""
    room = reduce_only_room(state, inst, cmd.side)
    if room <= 0:
        raise Reject(Code.REDUCE_ONLY_REJECTED, f"reduce-only {cmd.side} would open or grow a position "
                                                f"(closable now: {inst.format_qty(max(room, 0))})")
    executed = min(qty_lots, room)
    rests = cmd.order_type == "LIMIT" and cmd.time_in_force in ("GTC", "GTX")
    return executed, 0 if rests else qty_lots - executed


def check_position_cap(state: AccountState, inst: Instrument, side: str, order_notional: int,
                       replaces_order_id: int | None = None) -> None:
    """Binance's -2027: an order may not take its side's exposure above the cap of the account's
    leverage (Instrument.max_notional_at). An order that leaves its side no larger than before (it
    reduces the position) always passes, so a position above the cap can still be closed."""
    leverage = state.leverage.get(inst.symbol, inst.default_leverage)
    cap = inst.max_notional_at(leverage)
    after = exposure(state, inst, side, order_notional, replaces_order_id)
    if after > cap and after > exposure(state, inst, side):
        raise Reject(Code.POSITION_CAP_EXCEEDED,
                     f"position and open {side} orders would reach {format_amount(after)} {inst.margin_asset}, above "
                     f"the {format_amount(cap)} allowed at {leverage}x")


def available(state: AccountState, asset: str) -> int:
    """The account's available amount of `asset`, without creating its balance (a check never writes)."""
    bal = state.balances.get(asset)
    return 0 if bal is None else bal.available


def find_order(state: AccountState, cmd: m.CancelOrder | m.AmendOrder, memory: Memory) -> OrderState:
    order_id = cmd.order_id
    if order_id is None and cmd.client_order_id is not None:
        order_id = memory.order_id_of(cmd.client_order_id)
    if order_id is None:
        raise Reject(Code.UNKNOWN_ORDER, "unknown order")
    order = state.orders.get(order_id)
    if order is None or order.symbol != cmd.symbol:
        raise Reject(Code.UNKNOWN_ORDER, f"no open order {order_id} in {cmd.symbol}")
    return order


def reservation(inst: Instrument, order: OrderState, price_ticks: int, leaves_lots: int) -> tuple[int, int]:
    """(margin, fee) an open order must hold for `leaves_lots` at `price_ticks`: the one rule used at
    placement (reduce-only: the fee only)."""
    if order.reduce_only:
        return 0, mg.fee(inst.notional(price_ticks, leaves_lots), inst.taker_fee_e8)
    return mg.order_reservation(inst, price_ticks, leaves_lots, order.leverage)
