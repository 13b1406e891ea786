"""Command handlers of the accounts processor: (state, command) -> outputs. Pure.

Every handler either applies a command completely or changes nothing and answers
with a result code. Idempotency: API commands by request id, settlement legs by
(symbol, seq, leg), client order ids per account; a signed command's nonce is used once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from perpline.accounts import margin as mg
from perpline.accounts import order_status as st
from perpline.accounts.ledger import JournalBuilder, platform_account, user_account
from perpline.accounts.memory import DictMemory, Memory, Store
from perpline.accounts.state import AccountState, OrderState, Position, RequestOutcome
from perpline.contracts import ids
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.contracts.instruments import Instrument, load_catalog
from perpline.contracts.units import (
    UnitError,
    format_amount,
    format_exact,
    format_fixed,
    parse_amount,
)
from perpline.risk.formulas import PRICE_E8_DECIMALS, average_price_e8, side_exposure_notional

log = logging.getLogger("perpline.accounts")

LOGICAL_ORDERS = "orders"
LOGICAL_ACCOUNT_EVENTS = "account.events"
LOGICAL_LEDGER = "ledger.entries"
LOGICAL_POSITIONS = "positions"
SUPPORTED_ORDER_TYPES = ("LIMIT", "MARKET")
MARKET_TIFS = {"GTC": "IOC", "IOC": "IOC", "FOK": "FOK"}  # a MARKET order reaches the matcher as this limit TIF


@dataclass
class Out:
    topic: str
    key: str
    msg: object  # a message Struct (a JournalBuilder only until _finalize)


@dataclass
class Ctx:
    """What every output of one command shares: its trace, its cause and its time."""

    trace_id: str
    causation_id: str
    ts_ms: int
    memory: Memory
    outs: list[Out] = field(default_factory=list)

    def emit(self, topic: str, key: str | int, msg: object) -> None:
        self.outs.append(Out(topic, str(key), msg))

    def meta(self) -> dict[str, object]:
        return {"trace_id": self.trace_id, "causation_id": self.causation_id, "ts_ms": self.ts_ms}


class Reject(Exception):
    def __init__(self, code: Code, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def handle(state: AccountState, cmd: m.Msg, store: Store | None = None) -> list[Out]:
    """Apply one command to one account's state; returns the messages to publish.

    `store` holds the account's idempotency memory (the processor's state store); without one
    it lives in `state.local`.
    """
    cause = getattr(cmd, "request_id", None) or _leg_cause(cmd)
    memory = Memory(state, store if store is not None else DictMemory(state.local))
    ctx = Ctx(cmd.trace_id, cause, cmd.ts_ms, memory)
    if isinstance(cmd, m.FillLeg):
        _on_fill(state, cmd, ctx)
    elif isinstance(cmd, m.AmendDone):
        _on_amend_done(state, cmd, ctx)
    elif isinstance(cmd, m.OrderDone):
        _on_done(state, cmd, ctx)
    else:
        _on_request(state, cmd, ctx)
    return _finalize(ctx, state)


def _leg_cause(cmd: m.Msg) -> str:
    if isinstance(cmd, m.FillLeg):
        return ids.fill_leg_id(cmd.symbol, cmd.seq, cmd.liquidity)
    if isinstance(cmd, m.OrderDone):
        return f"done:{cmd.symbol}:{cmd.seq}"
    if isinstance(cmd, m.AmendDone):
        return f"amend:{cmd.symbol}:{cmd.seq}"
    return cmd.causation_id


# --- API requests ----------------------------------------------------------------------


def _on_request(state: AccountState, cmd: m.Msg, ctx: Ctx) -> None:
    """A request id is decided once, and a signature is used once (exchange-wide: every API replica's
    commands meet here). In that order: a known request id gets its first decision again (a client's
    retry with the same Idempotency-Key, re-signed or not, and a broker redelivery); otherwise a command
    whose nonce was already used is refused with REPLAYED_REQUEST. Either way nothing changes."""
    request_id: str = cmd.request_id
    seen = ctx.memory.request(request_id)
    if seen is not None:  # a resend: answer again, change nothing
        _result(state, ctx, request_id, seen)
        return
    try:
        _use_nonce(cmd, ctx)
        outcome = _dispatch(state, cmd, ctx)
    except (Reject, UnitError) as err:
        outcome = RequestOutcome(False, int(err.code), err.msg, None, getattr(cmd, "client_order_id", None))
    ctx.memory.remember_request(request_id, outcome)
    _result(state, ctx, request_id, outcome)


def _use_nonce(cmd: m.Msg, ctx: Ctx) -> None:
    """A signed command's nonce is recorded before it is decided: a signature that was refused (say,
    for want of balance) is used up too, as on Binance."""
    if not isinstance(cmd, m.ApiCommand) or not cmd.nonce:
        return
    refused = ctx.memory.use_nonce(cmd.nonce, cmd.signed_ms, cmd.ts_ms)
    if refused is not None:
        raise Reject(*refused)


def _dispatch(state: AccountState, cmd: m.Msg, ctx: Ctx) -> RequestOutcome:
    if isinstance(cmd, m.Deposit):
        return _deposit(state, cmd, ctx)
    if isinstance(cmd, m.Withdraw):
        return _withdraw(state, cmd, ctx)
    if isinstance(cmd, m.PlaceOrder):
        return _place(state, cmd, ctx)
    if isinstance(cmd, m.CancelOrder):
        return _cancel(state, cmd, ctx)
    if isinstance(cmd, m.CancelAll):
        return _cancel_all(state, cmd, ctx)
    if isinstance(cmd, m.SetLeverage):
        return _set_leverage(state, cmd, ctx)
    if isinstance(cmd, m.AmendOrder):
        return _amend(state, cmd, ctx)
    if isinstance(cmd, m.PostRepair):
        from perpline.accounts import repairs  # noqa: PLC0415 (reconciliation repairs build on this module)

        return repairs.post_repair(state, cmd, ctx)
    if isinstance(cmd, (m.FundingCharge, m.Liquidate, m.Deleverage)):
        from perpline.accounts import perp  # noqa: PLC0415 (perp builds on this module's helpers)

        if isinstance(cmd, m.FundingCharge):
            return perp.funding(state, cmd, ctx)
        return perp.liquidate(state, cmd, ctx) if isinstance(cmd, m.Liquidate) else perp.deleverage(state, cmd, ctx)
    raise Reject(Code.MALFORMED, f"unsupported command {type(cmd).__name__}")


def _result(state: AccountState, ctx: Ctx, request_id: str, outcome: RequestOutcome) -> None:
    ctx.emit(LOGICAL_ACCOUNT_EVENTS, state.account_id, m.CommandResult(
        **ctx.meta(), request_id=request_id, account_id=state.account_id, ok=outcome.ok, code=outcome.code,
        msg=outcome.msg, order_id=outcome.order_id, client_order_id=outcome.client_order_id,
        order_ids=list(outcome.order_ids)))


def _ok(order_id: int | None = None, client_order_id: str | None = None) -> RequestOutcome:
    return RequestOutcome(True, 0, "", order_id, client_order_id)


def _asset(asset: str) -> str:
    if asset not in load_catalog().assets:
        raise Reject(Code.UNKNOWN_ASSET, f"unknown asset {asset!r}")
    return asset


def _deposit(state: AccountState, cmd: m.Deposit, ctx: Ctx) -> RequestOutcome:
    asset, amount = _asset(cmd.asset), _positive_amount(cmd.amount)
    bal = state.balance(asset)
    bal.available += amount
    _journal(ctx, state, "DEPOSIT", ids.wallet_cause(state.account_id, cmd.request_id), asset).transfer(
        platform_account("HOT_WALLET"), user_account(state.account_id, "SPOT"), amount)
    _balance_changed(state, ctx, asset)
    return _ok()


def _withdraw(state: AccountState, cmd: m.Withdraw, ctx: Ctx) -> RequestOutcome:
    asset, amount = _asset(cmd.asset), _positive_amount(cmd.amount)
    bal = state.balance(asset)
    if bal.available < amount:
        raise Reject(Code.INSUFFICIENT_BALANCE, f"available {format_amount(bal.available)} < {cmd.amount}")
    bal.available -= amount
    _journal(ctx, state, "WITHDRAWAL", ids.wallet_cause(state.account_id, cmd.request_id), asset).transfer(
        user_account(state.account_id, "SPOT"), platform_account("HOT_WALLET"), amount)
    _balance_changed(state, ctx, asset)
    return _ok()


def _positive_amount(text: str) -> int:
    amount = parse_amount(text)
    if amount <= 0:
        raise Reject(Code.NOT_POSITIVE, "amount must be greater than zero")
    return amount


def _instrument(symbol: str) -> Instrument:
    inst = load_catalog().get(symbol)
    if inst is None or inst.symbol != symbol:
        raise Reject(Code.UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}")
    return inst


def _place(state: AccountState, cmd: m.PlaceOrder, ctx: Ctx) -> RequestOutcome:
    existing = ctx.memory.order_id_of(cmd.client_order_id)
    if existing is not None:  # a resent order: the existing one, never a second
        return _ok(existing, cmd.client_order_id)
    inst = _instrument(cmd.symbol)
    price_ticks, qty_lots = _order_numbers(inst, cmd)
    if len(state.orders) >= inst.max_open_orders:
        raise Reject(Code.TOO_MANY_OPEN_ORDERS, f"at most {inst.max_open_orders} open orders")
    leverage = state.leverage.get(inst.symbol, inst.default_leverage)
    unexecuted_lots = 0
    if cmd.reduce_only:
        qty_lots, unexecuted_lots = _reduce_only_split(state, inst, cmd, qty_lots)
        margin, fee = 0, mg.fee(inst.notional(price_ticks, qty_lots), inst.taker_fee_e8)
    else:
        _check_position_cap(state, inst, cmd.side, inst.notional(price_ticks, qty_lots))
        margin, fee = mg.order_reservation(inst, price_ticks, qty_lots, leverage)
    bal = state.balance(inst.margin_asset)
    if bal.available < margin + fee:
        raise Reject(Code.INSUFFICIENT_BALANCE,
                     f"order needs {format_amount(margin + fee)} {inst.margin_asset}, available {format_amount(bal.available)}")
    state.order_seq += 1
    order = OrderState(
        order_id=ids.order_id_for(state.account_id, state.order_seq), client_order_id=cmd.client_order_id,
        symbol=inst.symbol, side=cmd.side, order_type=cmd.order_type, time_in_force=cmd.time_in_force,
        price_ticks=price_ticks, qty_lots=qty_lots, leaves_lots=qty_lots, leverage=leverage,
        margin_frozen=margin, fee_frozen=fee, created_ms=ctx.ts_ms, updated_ms=ctx.ts_ms, reduce_only=cmd.reduce_only,
        unexecuted_lots=unexecuted_lots)
    _freeze(state, ctx, inst, order)
    tif = MARKET_TIFS[cmd.time_in_force] if cmd.order_type == "MARKET" else cmd.time_in_force
    ctx.emit(LOGICAL_ORDERS, inst.symbol, m.NewOrder(
        **ctx.meta(), order_id=order.order_id, account_id=state.account_id, symbol=inst.symbol, side=cmd.side,
        order_type="LIMIT", time_in_force=tif, price=inst.format_price(price_ticks),  # type: ignore[arg-type]
        quantity=inst.format_qty(qty_lots), client_order_id=cmd.client_order_id, stp=cmd.stp,
        reduce_only=cmd.reduce_only))
    return _ok(order.order_id, cmd.client_order_id)


def _order_numbers(inst: Instrument, cmd: m.PlaceOrder) -> tuple[int, int]:
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
        _check_band(inst, price_ticks, cmd.band_reference)
    code = inst.check_filters(price_ticks if not cmd.reduce_only else 0, qty_lots)
    if code != Code.OK:
        raise Reject(code, f"order fails the {code.name} filter of {inst.symbol}")
    return price_ticks, qty_lots


def _check_band(inst: Instrument, price_ticks: int, reference: str | None) -> None:
    if reference is None:
        return
    low, high = inst.band_ticks(inst.parse_price(reference))
    if not low <= price_ticks <= high:
        raise Reject(Code.PRICE_OUT_OF_BAND, f"limit price must be within {inst.format_price(low)} and "
                                             f"{inst.format_price(high)} (the price band around {reference})")


def _reduce_only_reserved(state: AccountState, symbol: str, side: str) -> int:
    """Open quantity of the account's reduce-only orders on `side` of `symbol`, lots."""
    return sum(o.leaves_lots for o in state.orders.values() if o.reduce_only and o.symbol == symbol and o.side == side)


def _closable(state: AccountState, symbol: str, side: str) -> int:
    """How much an order on `side` can close: the opposite position's size, lots (0 if none)."""
    pos = state.positions.get(symbol)
    size = pos.size_lots if pos is not None else 0
    if side == "SELL":
        return max(size, 0)
    return max(-size, 0)


def _reduce_only_room(state: AccountState, inst: Instrument, side: str) -> int:
    """Lots a new reduce-only order on `side` can still close: the opposite position less what the
    account's open reduce-only orders on that side already cover."""
    return _closable(state, inst.symbol, side) - _reduce_only_reserved(state, inst.symbol, side)


def _check_reduce_only(state: AccountState, inst: Instrument, side: str, qty_lots: int) -> None:
    """An amend may not raise a reduce-only order beyond what it can close."""
    room = _reduce_only_room(state, inst, side)
    if qty_lots > room:
        raise Reject(Code.REDUCE_ONLY_REJECTED,
                     f"reduce-only {side} of {inst.format_qty(qty_lots)} exceeds the closable {inst.format_qty(max(room, 0))}")


def _reduce_only_split(state: AccountState, inst: Instrument, cmd: m.PlaceOrder, qty_lots: int) -> tuple[int, int]:
    """(lots to execute, lots never executed) of a new reduce-only order, as Binance: refused (-2022)
    only when it can close nothing (no opposite position, or it is all covered by other reduce-only
    orders); larger than what it can close, it is reduced to that. A resting order (LIMIT GTC/GTX)
    simply has the reduced quantity; an IOC, FOK or MARKET keeps the client's quantity and the excess
    is not executed (the order ends EXPIRED after closing the position)."""
    room = _reduce_only_room(state, inst, cmd.side)
    if room <= 0:
        raise Reject(Code.REDUCE_ONLY_REJECTED, f"reduce-only {cmd.side} would open or grow a position "
                                                f"(closable now: {inst.format_qty(max(room, 0))})")
    executed = min(qty_lots, room)
    rests = cmd.order_type == "LIMIT" and cmd.time_in_force in ("GTC", "GTX")
    return executed, 0 if rests else qty_lots - executed


def _exposure(state: AccountState, inst: Instrument, side: str, extra_notional: int = 0,
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


def _check_position_cap(state: AccountState, inst: Instrument, side: str, order_notional: int,
                        replaces_order_id: int | None = None) -> None:
    """Binance's -2027: an order may not take its side's exposure above the cap of the account's
    leverage (Instrument.max_notional_at). An order that leaves its side no larger than before (it
    reduces the position) always passes, so a position above the cap can still be closed."""
    leverage = state.leverage.get(inst.symbol, inst.default_leverage)
    cap = inst.max_notional_at(leverage)
    after = _exposure(state, inst, side, order_notional, replaces_order_id)
    if after > cap and after > _exposure(state, inst, side):
        raise Reject(Code.POSITION_CAP_EXCEEDED,
                     f"position and open {side} orders would reach {format_amount(after)} {inst.margin_asset}, above "
                     f"the {format_amount(cap)} allowed at {leverage}x")


def _cut_reduce_only(state: AccountState, ctx: Ctx, inst: Instrument) -> None:
    """After a position change: cancel reduce-only orders (newest first) that could now open or grow a
    position, as Binance does; their margin is released when the matcher confirms."""
    for side in ("BUY", "SELL"):
        excess = _reduce_only_reserved(state, inst.symbol, side) - _closable(state, inst.symbol, side)
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


def _freeze(state: AccountState, ctx: Ctx, inst: Instrument, order: OrderState) -> None:
    bal = state.balance(inst.margin_asset)
    amount = order.margin_frozen + order.fee_frozen
    bal.available -= amount
    bal.order_margin += amount
    state.orders[order.order_id] = order
    _journal(ctx, state, "ORDER_MARGIN_FROZEN", f"order:{order.order_id}", inst.margin_asset, inst.symbol).transfer(
        user_account(state.account_id, "SPOT"), user_account(state.account_id, "ORDER_MARGIN"), amount)
    _balance_changed(state, ctx, inst.margin_asset)
    _order_changed(state, ctx, inst, order)


def _find_order(state: AccountState, cmd: m.CancelOrder | m.AmendOrder, ctx: Ctx) -> OrderState:
    order_id = cmd.order_id
    if order_id is None and cmd.client_order_id is not None:
        order_id = ctx.memory.order_id_of(cmd.client_order_id)
    if order_id is None:
        raise Reject(Code.UNKNOWN_ORDER, "unknown order")
    order = state.orders.get(order_id)
    if order is None or order.symbol != cmd.symbol:
        raise Reject(Code.UNKNOWN_ORDER, f"no open order {order_id} in {cmd.symbol}")
    return order


def _cancel(state: AccountState, cmd: m.CancelOrder, ctx: Ctx) -> RequestOutcome:
    order = _find_order(state, cmd, ctx)
    ctx.emit(LOGICAL_ORDERS, order.symbol, m.CancelRequest(
        **ctx.meta(), order_id=order.order_id, account_id=state.account_id, symbol=order.symbol))
    return _ok(order.order_id, order.client_order_id)


def _reservation(inst: Instrument, order: OrderState, price_ticks: int, leaves_lots: int) -> tuple[int, int]:
    """(margin, fee) an open order must hold for `leaves_lots` at `price_ticks`: the one rule used at
    placement (reduce-only: the fee only)."""
    if order.reduce_only:
        return 0, mg.fee(inst.notional(price_ticks, leaves_lots), inst.taker_fee_e8)
    return mg.order_reservation(inst, price_ticks, leaves_lots, order.leverage)


def _amend(state: AccountState, cmd: m.AmendOrder, ctx: Ctx) -> RequestOutcome:
    order = _find_order(state, cmd, ctx)
    if order.amend_pending or order.cut:
        raise Reject(Code.MALFORMED, "the order is being amended or cancelled; wait for that first")
    if order.order_type != "LIMIT":
        raise Reject(Code.BAD_ORDER_TYPE, "only LIMIT orders can be amended")
    inst = _instrument(cmd.symbol)
    price_ticks = inst.parse_price(cmd.price) if cmd.price is not None else order.price_ticks
    qty_lots = inst.parse_qty(cmd.quantity)
    if price_ticks != order.price_ticks:
        _check_band(inst, price_ticks, cmd.band_reference)
    if qty_lots <= order.filled_lots:
        raise Reject(Code.QTY_TOO_SMALL, f"quantity must exceed the filled {inst.format_qty(order.filled_lots)}")
    code = inst.check_filters(price_ticks if not order.reduce_only else 0, qty_lots)
    if code != Code.OK:
        raise Reject(code, f"order fails the {code.name} filter of {inst.symbol}")
    new_leaves = qty_lots - order.filled_lots
    if order.reduce_only and new_leaves > order.leaves_lots:
        _check_reduce_only(state, inst, order.side, new_leaves - order.leaves_lots)
    if not order.reduce_only:
        _check_position_cap(state, inst, order.side, inst.notional(price_ticks, new_leaves), order.order_id)
    margin, fee = _reservation(inst, order, price_ticks, new_leaves)
    extra = max(0, margin + fee - order.margin_frozen - order.fee_frozen)
    bal = state.balance(inst.margin_asset)
    if bal.available < extra:
        raise Reject(Code.INSUFFICIENT_BALANCE, f"the amend needs {format_amount(extra)} more {inst.margin_asset}")
    if extra:
        bal.available -= extra
        bal.order_margin += extra
        order.margin_frozen += extra
        _journal(ctx, state, "ORDER_MARGIN_FROZEN", f"amend:{order.order_id}:{cmd.request_id}", inst.margin_asset,
                 inst.symbol).transfer(user_account(state.account_id, "SPOT"), user_account(state.account_id, "ORDER_MARGIN"),
                                       extra)
        _balance_changed(state, ctx, inst.margin_asset)
    order.amend_pending = True
    ctx.emit(LOGICAL_ORDERS, inst.symbol, m.AmendRequest(
        **ctx.meta(), order_id=order.order_id, account_id=state.account_id, symbol=inst.symbol,
        price=inst.format_price(price_ticks), quantity=inst.format_qty(qty_lots)))
    return _ok(order.order_id, order.client_order_id)


def _on_amend_done(state: AccountState, cmd: m.AmendDone, ctx: Ctx) -> None:
    """The matcher applied or refused an amend: hold exactly what the order now needs."""
    if _already_applied(state, cmd.symbol, cmd.seq * 2):
        return
    order = state.orders.get(cmd.order_id)
    if order is None:
        return  # finished meanwhile: its OrderDone or last fill released everything it held
    inst = _instrument(cmd.symbol)
    if cmd.ok:
        order.price_ticks, order.qty_lots = inst.parse_price(cmd.price), inst.parse_qty(cmd.quantity)
        order.leaves_lots = inst.parse_qty(cmd.leaves, allow_zero=True)
        assert order.qty_lots == order.filled_lots + order.leaves_lots, "amend: matcher and account disagree on fills"
    margin, fee = _reservation(inst, order, order.price_ticks, order.leaves_lots)  # refused: the old terms
    release = order.margin_frozen + order.fee_frozen - margin - fee
    order.margin_frozen, order.fee_frozen = margin, fee
    order.amend_pending = False
    order.updated_ms = ctx.ts_ms
    bal = state.balance(inst.margin_asset)
    bal.order_margin -= release
    bal.available += release
    spot, frozen = user_account(state.account_id, "SPOT"), user_account(state.account_id, "ORDER_MARGIN")
    journal = _journal(ctx, state, "ORDER_MARGIN_RELEASED", f"amend:{order.order_id}:{cmd.seq}", inst.margin_asset,
                       inst.symbol)
    if release >= 0:
        journal.transfer(frozen, spot, release)
    else:  # fills while the amend was out released pro rata: hold the difference again
        journal.transfer(spot, frozen, -release)
    _balance_changed(state, ctx, inst.margin_asset)
    _order_changed(state, ctx, inst, order)


def _cancel_all(state: AccountState, cmd: m.CancelAll, ctx: Ctx) -> RequestOutcome:
    inst = _instrument(cmd.symbol)
    order_ids = sorted(oid for oid, o in state.orders.items() if o.symbol == inst.symbol)
    for order_id in order_ids:
        ctx.emit(LOGICAL_ORDERS, inst.symbol, m.CancelRequest(
            **ctx.meta(), order_id=order_id, account_id=state.account_id, symbol=inst.symbol))
    return RequestOutcome(True, 0, "", None, None, order_ids)


def _set_leverage(state: AccountState, cmd: m.SetLeverage, ctx: Ctx) -> RequestOutcome:
    inst = _instrument(cmd.symbol)
    if not 1 <= cmd.leverage <= inst.max_leverage:
        raise Reject(Code.BAD_LEVERAGE, f"leverage must be 1..{inst.max_leverage}")
    pos = state.positions.get(inst.symbol)
    if pos is not None and pos.size_lots != 0 and cmd.leverage < pos.leverage:
        raise Reject(Code.LEVERAGE_TOO_LOW_FOR_POSITION, "cannot lower leverage with an open isolated position")
    held = max(_exposure(state, inst, "BUY"), _exposure(state, inst, "SELL"))
    cap = inst.max_notional_at(cmd.leverage)
    if held > cap:
        raise Reject(Code.POSITION_CAP_EXCEEDED, f"position and open orders reach {format_amount(held)} "
                                                 f"{inst.margin_asset}, above the {format_amount(cap)} allowed at {cmd.leverage}x")
    state.leverage[inst.symbol] = cmd.leverage
    return _ok()


# --- settlement legs -------------------------------------------------------------------


def _already_applied(state: AccountState, symbol: str, position: int) -> bool:
    if state.applied.get(symbol, -1) >= position:
        return True
    state.applied[symbol] = position
    return False


def _on_fill(state: AccountState, leg: m.FillLeg, ctx: Ctx) -> None:
    if _already_applied(state, leg.symbol, leg.seq * 2 + (1 if leg.liquidity == "TAKER" else 0)):
        return
    order = state.orders.get(leg.order_id)
    inst = _instrument(leg.symbol)
    if order is None:  # never applied: the processor dead-letters it and alarms
        raise Reject(Code.UNKNOWN_ORDER, f"fill for unknown order {leg.order_id}")
    price_ticks, qty_lots = inst.parse_price(leg.price), inst.parse_qty(leg.quantity)
    event = "fill" if order.leaves_lots == qty_lots else "partial_fill"
    if event == "fill" and order.unexecuted_lots:
        event = "expire"  # a reduce-only order's quantity beyond the position was never executed
    new_status = st.transition(order.status, event)  # raises before anything changes
    assert qty_lots <= order.leaves_lots, "fill larger than the order's open quantity"
    release = _release_for_fill(order, qty_lots)
    fee_rate = inst.maker_fee_e8 if leg.liquidity == "MAKER" else inst.taker_fee_e8
    fee_paid = 0 if order.liquidation else mg.fee(inst.notional(price_ticks, qty_lots), fee_rate)
    pos = state.positions.setdefault(inst.symbol, Position(symbol=inst.symbol))
    closed_margin, pnl, new_margin = _apply_to_position(inst, pos, order, leg.side, price_ticks, qty_lots)
    _settle_balances(state, ctx, inst, leg, release, fee_paid, closed_margin, pnl, new_margin)
    if order.liquidation:
        from perpline.accounts import perp  # noqa: PLC0415

        perp.settle_liquidation_fill(state, ctx, inst, leg, order, closed_margin, pnl)
    order.status, order.updated_ms = new_status, ctx.ts_ms
    order.filled_lots += qty_lots
    order.leaves_lots -= qty_lots
    order.filled_value_tick_lots += price_ticks * qty_lots
    _emit_fill(state, ctx, inst, leg, order, fee_paid, pnl)
    if new_status in st.TERMINAL:
        _close_order(state, ctx, order)
    _cut_reduce_only(state, ctx, inst)


def _release_for_fill(order: OrderState, qty_lots: int) -> int:
    margin = mg.pro_rata(order.margin_frozen, qty_lots, order.leaves_lots)
    fee = mg.pro_rata(order.fee_frozen, qty_lots, order.leaves_lots)
    order.margin_frozen -= margin
    order.fee_frozen -= fee
    return margin + fee


def _apply_to_position(inst: Instrument, pos: Position, order: OrderState, side: str, price_ticks: int,
                       qty_lots: int) -> tuple[int, int, int]:
    """Apply a fill; returns (margin released by the close part, realised PnL, margin of the open part)."""
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
        new_margin = mg.initial_margin(notional, order.leverage)
        pos.cost += notional
        pos.margin += new_margin
        pos.size_lots += open_lots if signed > 0 else -open_lots
        pos.leverage = order.leverage
    if pos.size_lots == 0:
        assert pos.cost == 0 and pos.margin == 0, "a flat position holds no cost or margin"
    pos.version += 1
    return closed_margin, pnl, new_margin


def _settle_balances(state: AccountState, ctx: Ctx, inst: Instrument, leg: m.FillLeg, release: int, fee_paid: int,
                     closed_margin: int, pnl: int, new_margin: int) -> None:
    asset, acct, leg_id = inst.margin_asset, state.account_id, ids.fill_leg_id(leg.symbol, leg.seq, leg.liquidity)
    bal = state.balance(asset)
    bal.order_margin -= release
    bal.position_margin += new_margin - closed_margin
    bal.available += release - fee_paid + closed_margin + pnl - new_margin
    spot, order_m, pos_m = (user_account(acct, k) for k in ("SPOT", "ORDER_MARGIN", "POSITION_MARGIN"))
    (_journal(ctx, state, "TRADE_SETTLED", leg_id, asset, inst.symbol)
        .transfer(order_m, spot, release).transfer(pos_m, spot, closed_margin).transfer(spot, pos_m, new_margin))
    _journal(ctx, state, "TRADE_FEE", leg_id, asset, inst.symbol).transfer(spot, platform_account("FEE_REVENUE"), fee_paid)
    _realized_pnl_journal(ctx, state, leg_id, asset, inst.symbol, pnl)


def _realized_pnl_journal(ctx: Ctx, state: AccountState, cause: str, asset: str, symbol: str, pnl: int) -> None:
    """POSITION_REALIZED_PNL: a profit from PNL_CLEARING to the user's SPOT, a loss the other way."""
    spot, clearing = user_account(state.account_id, "SPOT"), platform_account("PNL_CLEARING")
    journal = _journal(ctx, state, "POSITION_REALIZED_PNL", cause, asset, symbol)
    if pnl >= 0:
        journal.transfer(clearing, spot, pnl)
    else:
        journal.transfer(spot, clearing, -pnl)


def _on_done(state: AccountState, cmd: m.OrderDone, ctx: Ctx) -> None:
    if _already_applied(state, cmd.symbol, cmd.seq * 2):
        return
    order = state.orders.get(cmd.order_id)
    if order is None:
        raise Reject(Code.UNKNOWN_ORDER, f"order {cmd.order_id} closed by the matcher is unknown here")
    order.status = st.transition(order.status, st.DONE_EVENTS[cmd.status])
    order.updated_ms = ctx.ts_ms
    inst = _instrument(cmd.symbol)
    amount = order.margin_frozen + order.fee_frozen
    order.margin_frozen = order.fee_frozen = 0
    bal = state.balance(inst.margin_asset)
    bal.order_margin -= amount
    bal.available += amount
    _journal(ctx, state, "ORDER_MARGIN_RELEASED", f"order:{order.order_id}:{cmd.status}", inst.margin_asset,
             inst.symbol).transfer(user_account(state.account_id, "ORDER_MARGIN"), user_account(state.account_id, "SPOT"), amount)
    _balance_changed(state, ctx, inst.margin_asset)
    _order_changed(state, ctx, inst, order)
    _close_order(state, ctx, order)


def _close_order(state: AccountState, ctx: Ctx, order: OrderState) -> None:
    assert order.margin_frozen == 0 and order.fee_frozen == 0, "a closed order holds nothing frozen"
    if order.liquidation:
        inst = _instrument(order.symbol)
        ctx.emit(LOGICAL_POSITIONS, order.symbol, m.LiquidationOrderDone(
            **ctx.meta(), account_id=state.account_id, symbol=order.symbol, order_id=order.order_id,
            client_order_id=order.client_order_id, filled=inst.format_qty(order.filled_lots)))
    del state.orders[order.order_id]
    ctx.memory.remember_closed(order.client_order_id, order.order_id)


# --- outputs ---------------------------------------------------------------------------


def _journal(ctx: Ctx, state: AccountState, ref_type: str, ref_id: str, asset: str, symbol: str = "") -> JournalBuilder:
    """A journal placeholder at this point of the output order, filled by its transfers, built in finalize."""
    builder = JournalBuilder(ref_type, ref_id, state.account_id, asset, symbol)
    ctx.outs.append(Out(LOGICAL_LEDGER, str(state.account_id), builder))
    return builder


def _finalize(ctx: Ctx, state: AccountState) -> list[Out]:
    """Build the journals (dropping empty ones, numbering the others per account) so every output is a
    concrete message."""
    result = []
    for out in ctx.outs:
        if isinstance(out.msg, JournalBuilder):
            journal = out.msg.build(ctx.trace_id, ctx.causation_id, ctx.ts_ms, state.journal_seq + 1)
            if journal is None:
                continue
            state.journal_seq += 1
            out = Out(out.topic, out.key, journal)
        result.append(out)
    return result


def _balance_changed(state: AccountState, ctx: Ctx, asset: str) -> None:
    bal = state.balance(asset)
    assert bal.order_margin >= 0 and bal.position_margin >= 0, "frozen amounts never go negative"
    bal.version += 1
    ctx.emit(LOGICAL_ACCOUNT_EVENTS, state.account_id, m.BalanceChanged(
        **ctx.meta(), account_id=state.account_id, asset=asset, available=format_amount(bal.available),
        order_margin=format_amount(bal.order_margin), position_margin=format_amount(bal.position_margin),
        wallet=format_amount(bal.wallet), version=bal.version))


def _order_view(state: AccountState, inst: Instrument, order: OrderState) -> m.OrderView:
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


def _order_changed(state: AccountState, ctx: Ctx, inst: Instrument, order: OrderState) -> None:
    ctx.emit(LOGICAL_ACCOUNT_EVENTS, state.account_id, m.OrderChanged(
        **ctx.meta(), account_id=state.account_id, order=_order_view(state, inst, order)))


def _entry_price(inst: Instrument, pos: Position) -> str:
    if pos.size_lots == 0:
        return format_fixed(0, inst.price_decimals)
    per_lot = pos.cost // abs(pos.size_lots)  # amount units per lot
    units = per_lot * inst.tick_units // inst.amount_per_tick_lot
    return format_fixed(units, inst.price_decimals)


def _emit_fill(state: AccountState, ctx: Ctx, inst: Instrument, leg: m.FillLeg, order: OrderState, fee_paid: int,
               pnl: int) -> None:
    acct = state.account_id
    ctx.emit(LOGICAL_ACCOUNT_EVENTS, acct, m.FillRecorded(
        **ctx.meta(), account_id=acct, symbol=inst.symbol, trade_id=leg.trade_id, order_id=leg.order_id, side=leg.side,
        liquidity=leg.liquidity, price=leg.price, quantity=leg.quantity, fee=format_amount(fee_paid),
        fee_asset=inst.margin_asset, realized_pnl=format_amount(pnl)))
    _order_changed(state, ctx, inst, order)
    _balance_changed(state, ctx, inst.margin_asset)
    _position_changed(state, ctx, inst)


def _position_changed(state: AccountState, ctx: Ctx, inst: Instrument) -> None:
    """The position's new state for the read models (account.events) and the risk process (positions)."""
    pos, acct = state.positions[inst.symbol], state.account_id
    size = format_fixed(pos.size_lots * inst.lot_units, inst.qty_decimals)
    entry = _entry_price(inst, pos)
    ctx.emit(LOGICAL_ACCOUNT_EVENTS, acct, m.PositionChanged(
        **ctx.meta(), account_id=acct, symbol=inst.symbol, size=size, entry_price=entry,
        margin=format_amount(pos.margin), leverage=pos.leverage, realized_pnl=format_amount(pos.realized_pnl),
        version=pos.version, cost=format_amount(pos.cost)))
    ctx.emit(LOGICAL_POSITIONS, inst.symbol, m.PositionSnapshot(
        **ctx.meta(), account_id=acct, symbol=inst.symbol, size=size, entry_price=entry,
        margin=format_amount(pos.margin), leverage=pos.leverage, version=pos.version, cost=format_amount(pos.cost)))
