"""Orders and account commands: publish a command, wait (bounded) for the accounts processor's
decision and for the matcher's outcome to reach the account views, so every surface answers with
the state the write left and never with a status the order may not end in."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec
from fastapi import Request

from perpline import wallet
from perpline.accounts.order_status import EXPIRED, OPEN, REJECTED, TERMINAL
from perpline.api.deps import ApiDeps, command_meta
from perpline.api.errors import NoDecision
from perpline.api.service import halts, market
from perpline.contracts import messages as m
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.ids import new_request_id
from perpline.contracts.instruments import Instrument

UNSETTLED = ("order accepted; its outcome is not settled within the API's wait: query it by its order id or "
             "client order id")


def code_of(value: int) -> Code:
    try:
        return Code(value)
    except ValueError:
        return Code.INTERNAL


async def submit(d: ApiDeps, acct: int, cmd: msgspec.Struct, rid: str, marks: dict[str, float] | None = None
                 ) -> m.CommandResult:
    """Publish an account command and wait, bounded, for the accounts processor's decision: the result
    when accepted; the refusal raised as its code; NoDecision when none arrived within the wait."""
    await d.send("account.commands", str(acct), cmd)
    if marks is not None:
        marks["sent"] = time.perf_counter()
    result = await d.rm().wait_result(acct, rid, d.wait_s)
    if result is None:
        raise NoDecision(rid)
    if not result.ok:
        raise PerplineError(code_of(result.code), result.msg)
    return result


@dataclass(frozen=True)
class OrderTerms:
    """A new order as the caller asked for it (decimal strings: the accounts processor parses them)."""

    side: str
    order_type: str
    time_in_force: str
    price: str | None
    quantity: str
    client_order_id: str
    reduce_only: bool = False
    stp: str = "DEFAULT"


@dataclass(frozen=True)
class Placed:
    order: m.OrderView
    matcher_code: int  # why the matcher ended it (REJECTED, EXPIRED), else 0


async def place(d: ApiDeps, request: Request, acct: int, rid: str, inst: Instrument, terms: OrderTerms) -> Placed:
    """Place an order and answer with it as matching left it (NEW resting, FILLED, EXPIRED, ...), once
    the matcher is done with it and this account and its makers show the fills; TIMEOUT if that takes
    longer than the API's wait (a processor down). Records where the time went (X-Stage-Ms)."""
    rm = d.rm()
    await halts.check_not_halted(d, inst.symbol)  # the reconciler halted it: refused here, cancels still pass
    cmd = m.PlaceOrder(**command_meta(request, rid), request_id=rid, account_id=acct, symbol=inst.symbol,
                       side=terms.side, order_type=terms.order_type, time_in_force=terms.time_in_force,  # type: ignore[arg-type]
                       price=terms.price, quantity=terms.quantity, client_order_id=terms.client_order_id,
                       reduce_only=terms.reduce_only, stp=terms.stp,  # type: ignore[arg-type]
                       price_bound=market.market_bound(d, inst, terms.order_type, terms.side),
                       band_reference=market.band_reference(d, inst))
    started, marks = time.perf_counter(), dict[str, float]()
    try:
        result = await submit(d, acct, cmd, rid, marks)
    except PerplineError as err:
        err.instrument = inst  # type: ignore[attr-defined]  # Binance's min-notional message names its filter
        raise
    decided = time.perf_counter()
    assert result.order_id is not None
    settled = await rm.wait_settled(acct, result.order_id, d.wait_s)
    request.state.stages = _stages(request, started, marks["sent"], decided, time.perf_counter())
    view = rm.find_order(acct, result.order_id)
    if view is None or not settled:
        raise PerplineError(Code.TIMEOUT, f"{UNSETTLED} ({result.order_id})")
    code = rm.matcher_code(view.order_id) if view.status in (REJECTED, EXPIRED) else 0
    return Placed(view, code)


def _stages(request: Request, started: float, sent: float, decided: float, settled: float) -> str:
    """Where an order's answer time went (X-Stage-Ms, in ms): `api` from the request's arrival to the
    command's publication (auth, parsing, checks), `broker` until the broker acknowledged the command,
    `accounts` until the accounts processor's decision was in the read model, `settled` until the
    matcher's outcome and every fill were in the account views."""
    arrived = getattr(request.state, "arrived", started)
    return (f"api={(started - arrived) * 1000:.2f};broker={(sent - started) * 1000:.2f};"
            f"accounts={(decided - sent) * 1000:.2f};settled={(settled - decided) * 1000:.2f}")


def refuse_duplicate_client_order_id(d: ApiDeps, acct: int, client_order_id: str) -> None:
    if d.rm().find_client_order(acct, client_order_id) is not None:
        raise PerplineError(Code.DUPLICATE_CLIENT_ORDER_ID, client_order_id)


def find(d: ApiDeps, acct: int, inst: Instrument, order_id: int | None = None, client_order_id: str | None = None
         ) -> m.OrderView | None:
    """One of the caller's orders in `inst` by id or client order id (None: not found, or another symbol's)."""
    rm = d.rm()
    found = rm.find_order(acct, order_id) if order_id is not None else rm.find_client_order(acct, client_order_id or "")
    return found if found is not None and found.symbol == inst.symbol else None


def open_order(d: ApiDeps, acct: int, inst: Instrument, order_id: int | None = None,
               client_order_id: str | None = None) -> m.OrderView:
    found = find(d, acct, inst, order_id, client_order_id)
    if found is None or found.status not in OPEN:
        raise PerplineError(Code.UNKNOWN_ORDER, f"no open order {order_id or client_order_id} in {inst.symbol}")
    return found


async def amend(d: ApiDeps, request: Request, acct: int, inst: Instrument, order: m.OrderView,
                price: str | None, quantity: str) -> m.OrderView:
    """Amend an open order and wait (bounded) until the matcher answered and the views show it."""
    rm = d.rm()
    rid = new_request_id()
    answered, _ = rm.amends(order.order_id)
    cmd = m.AmendOrder(**command_meta(request, rid), request_id=rid, account_id=acct, symbol=inst.symbol,
                       order_id=order.order_id, price=price, quantity=quantity,
                       band_reference=market.band_reference(d, inst))
    await submit(d, acct, cmd, rid)
    code = await rm.wait_amended(acct, order.order_id, answered, d.wait_s)
    if code == -1:
        raise PerplineError(Code.TIMEOUT, "the matcher has not answered the amend yet")
    if code != 0:
        raise PerplineError(Code.UNKNOWN_ORDER if code == Code.MATCHER_UNKNOWN_ORDER else code_of(code),
                            "the matcher refused the amend")
    return rm.find_order(acct, order.order_id) or order


async def cancel(d: ApiDeps, request: Request, acct: int, inst: Instrument, order_id: int, rid: str
                 ) -> m.OrderView | None:
    """Cancel an order; the order once final, or None if the matcher has not confirmed within the wait."""
    cmd = m.CancelOrder(**command_meta(request, rid), request_id=rid, account_id=acct, symbol=inst.symbol,
                        order_id=order_id)
    await submit(d, acct, cmd, rid)
    return (await wait_closed(d, acct, [order_id]))[0]


async def cancel_all(d: ApiDeps, request: Request, acct: int, inst: Instrument, rid: str
                     ) -> list[tuple[int, m.OrderView | None]]:
    """Cancel every open order of the account in `inst`: (order id, the order once final or None)."""
    cmd = m.CancelAll(**command_meta(request, rid), request_id=rid, account_id=acct, symbol=inst.symbol)
    result = await submit(d, acct, cmd, rid)
    closed = await wait_closed(d, acct, list(result.order_ids))
    return list(zip(result.order_ids, closed, strict=True))


async def wait_closed(d: ApiDeps, acct: int, order_ids: list[int]) -> list[m.OrderView | None]:
    """Each order once it reached a final status (None if not yet), all under one bounded wait: a cancel-all
    waits for its orders together, not one fresh wait per order."""
    rm = d.rm()

    def closed(order_id: int) -> m.OrderView | None:
        order = rm.find_order(acct, order_id)
        return order if order is not None and order.status in TERMINAL else None

    await rm.wait_until(lambda: all(closed(oid) is not None for oid in order_ids), d.wait_s)
    return [closed(oid) for oid in order_ids]


async def set_leverage(d: ApiDeps, request: Request, acct: int, inst: Instrument, leverage: int, rid: str) -> None:
    cmd = m.SetLeverage(**command_meta(request, rid), request_id=rid, account_id=acct, symbol=inst.symbol,
                        leverage=leverage)
    await submit(d, acct, cmd, rid)


async def transfer(d: ApiDeps, request: Request, acct: int, kind: str, asset: str, amount: str, rid: str) -> None:
    """A deposit or a withdrawal (kind), decided by the accounts processor. The wallet records its side on its
    own statement (perpline.wallet): a deposit it received before the exchange credits it, a withdrawal it sent
    once the exchange debited the user."""
    make: Any = m.Deposit if kind == "deposit" else m.Withdraw
    if kind == "deposit":
        await wallet_line(d, wallet.DEPOSIT, acct, asset, amount, rid)
    await submit(d, acct, make(**command_meta(request, rid), request_id=rid, account_id=acct, asset=asset,
                               amount=amount), rid)
    if kind == "withdraw":
        await wallet_line(d, wallet.WITHDRAWAL, acct, asset, amount, rid)


async def wallet_line(d: ApiDeps, direction: str, acct: int, asset: str, amount: str, rid: str) -> None:
    """One movement on the wallet's statement; nothing for what the processor refuses anyway (bad asset, amount)."""
    try:
        line = wallet.movement(direction, acct, asset, amount, rid, int(time.time() * 1000))
    except wallet.NotAMovement:
        return
    await d.send(wallet.TOPIC, str(acct), line)


def outcome(d: ApiDeps, acct: int, rid: str) -> m.CommandResult | None:
    """The decision on one of the caller's own requests (request ids are unique per account only)."""
    return d.rm().result(acct, rid)
