"""Native REST API, /api/v1. Decimal strings for every amount; errors as {"code", "msg"}.

Identity: a signed request (X-MBX-APIKEY, HMAC-SHA256 of the query string + body, as Binance;
see perpline.api.auth). Only where the operator trusts the network (the embedded demo stack,
PERPLINE_TRUST_ACCOUNT_HEADER=1) may a caller name its account in X-Account-Id instead.
Key management (POST/DELETE /keys) needs the owner (a web session) or a key with manage_keys,
and a key never grants or revokes more than it holds; auth.keys decides it (perpline.auth.registry).
Idempotency: an Idempotency-Key header becomes the command's request id, so a resent
request (re-signed or not, on any API replica) is answered with the first outcome and changes
nothing. A signed request without one is still used once: its signature's nonce travels with the
command and the accounts processor refuses it a second time (REPLAYED_REQUEST), whichever replica
it reached. An order without a client order id is named after its key, never after a prefix of it
(contracts.ids.default_client_order_id).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, Field, StrictStr

from perpline.accounts.order_status import TERMINAL
from perpline.api import auth, errors, ratelimit, sessions
from perpline.api.app import ApiDeps
from perpline.api.halts import check_not_halted
from perpline.audit import Audit
from perpline.auth.registry import PERMISSIONS, may_grant
from perpline.contracts import messages as m
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.ids import default_client_order_id, new_request_id
from perpline.contracts.instruments import Instrument, load_catalog
from perpline.contracts.units import UnitError, format_amount, format_rate, parse_amount, parse_uint
from perpline.risk import formulas

router = APIRouter(prefix="/api/v1", responses={
    **errors.documented(*errors.COMMON_ERRORS),
    202: {"model": errors.Pending, "description": "sent, no decision yet: poll GET /api/v1/requests/{request_id}"}})


def _strict_uint(value: object) -> object:
    """Integer parameters given as text (path, query, a quoted JSON number) go through the one strict
    parser (ASCII digits only): pydantic alone would take ' 1', '1_0', '+1', '1.0' and true."""
    if isinstance(value, bool):
        raise ValueError("integer expected, not a boolean")
    if isinstance(value, str):
        try:
            return parse_uint(value, what="integer")
        except UnitError as err:
            raise ValueError(err.msg) from err
    return value


STRICT_UINT = BeforeValidator(_strict_uint)  # Annotated[int, Query(...), STRICT_UINT]: keeps the schema's bounds


def deps(request: Request) -> ApiDeps:
    found: ApiDeps = request.app.state.deps
    return found


async def _identify(request: Request, permission: str) -> int:
    """A signed request (API key), a web session (Bearer JWT: every permission of its user) or, only
    where trusted, a bare X-Account-Id; charged its route's weight and orders (perpline.api.ratelimit)
    as the API key, or as the account for a session or header."""
    d = deps(request)
    api_key: str | None = None
    if request.headers.get("authorization") is not None and request.headers.get(auth.API_KEY_HEADER) is None:
        user_id = (await sessions.bearer_claims(request, d)).user_id
    elif request.headers.get(auth.API_KEY_HEADER) is not None or not d.trust_account_header:
        caller = await auth.signed_caller(request, d.registry, d.guard, permission)
        user_id, api_key = caller.user_id, caller.api_key
    else:
        user_id = auth.header_account(request)
    ratelimit.charge_caller(request, api_key, user_id)
    return user_id


async def account_id(request: Request) -> int:
    """The caller's account: read permission for GET, trade permission otherwise."""
    return await _identify(request, auth.READ if request.method == "GET" else auth.TRADE)


async def withdrawing_account(request: Request) -> int:
    return await _identify(request, auth.WITHDRAW)


async def faucet_account(request: Request) -> int:
    """Deposits through the API exist only as the demo faucet (PERPLINE_FAUCET=1); money otherwise
    enters through `perpline admin deposit`, never with a trader's key."""
    if not deps(request).faucet:
        raise PerplineError(Code.FORBIDDEN, "deposits are credited by the wallet service, not through the trading API")
    return await _identify(request, auth.TRADE)


def request_id(idempotency_key: Annotated[str | None, Header()] = None) -> str:
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 64:
        raise PerplineError(Code.MALFORMED, "Idempotency-Key must be 1 to 64 characters")
    return idempotency_key or new_request_id()


Account = Annotated[int, Depends(account_id)]
WithdrawAccount = Annotated[int, Depends(withdrawing_account)]
FaucetAccount = Annotated[int, Depends(faucet_account)]
RequestId = Annotated[str, Depends(request_id)]
Deps = Annotated[ApiDeps, Depends(deps)]


def _instrument(symbol: str) -> Instrument:
    inst = load_catalog().get(symbol)
    if inst is None:
        raise PerplineError(Code.UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}")
    return inst


def _meta(request: Request, rid: str) -> dict[str, Any]:
    return {"trace_id": request.state.trace_id, "causation_id": rid, "ts_ms": int(time.time() * 1000)}


def _command_meta(request: Request, rid: str) -> dict[str, Any]:
    """What an account command carries besides its own fields: trace, cause, time and, for a signed
    request, its one-use nonce (the accounts processor refuses a replay across API replicas)."""
    return {**_meta(request, rid), **auth.one_use(request)}


async def _submit(d: ApiDeps, request: Request, acct: int, cmd: msgspec.Struct, rid: str) -> m.CommandResult | JSONResponse:
    """Publish a command and wait, bounded, for the accounts processor's decision."""
    await d.send("account.commands", str(acct), cmd)
    assert d.readmodel is not None
    result = await d.readmodel.wait_result(acct, rid, d.wait_s)
    if result is None:
        return JSONResponse({"status": "PENDING", "request_id": rid, "code": int(Code.TIMEOUT),
                             "msg": "no decision yet; poll GET /api/v1/requests/{request_id}"}, status_code=202)
    if not result.ok:
        return errors.error_response(request, result.code, result.msg)
    return result


# --- wallet ---------------------------------------------------------------------------


class Transfer(BaseModel):
    asset: StrictStr = Field(max_length=16)
    amount: StrictStr = Field(max_length=64, description="decimal string, e.g. \"1000.5\"")


@router.post("/wallet/deposits", tags=["wallet"])
async def deposit(body: Transfer, request: Request, acct: FaucetAccount, rid: RequestId, d: Deps) -> Any:
    cmd = m.Deposit(**_command_meta(request, rid), request_id=rid, account_id=acct, asset=body.asset, amount=body.amount)
    result = await _submit(d, request, acct, cmd, rid)
    return result if isinstance(result, JSONResponse) else {"request_id": rid, "status": "DONE", **_balances(d, acct)}


@router.post("/wallet/withdrawals", tags=["wallet"])
async def withdraw(body: Transfer, request: Request, acct: WithdrawAccount, rid: RequestId, d: Deps) -> Any:
    cmd = m.Withdraw(**_command_meta(request, rid), request_id=rid, account_id=acct, asset=body.asset, amount=body.amount)
    result = await _submit(d, request, acct, cmd, rid)
    return result if isinstance(result, JSONResponse) else {"request_id": rid, "status": "DONE", **_balances(d, acct)}


# --- trading --------------------------------------------------------------------------


class NewOrderBody(BaseModel):
    symbol: StrictStr = Field(max_length=32)
    side: Literal["BUY", "SELL"]
    type: Literal["LIMIT", "MARKET"] = "LIMIT"
    time_in_force: Literal["GTC", "IOC", "FOK", "GTX"] = "GTC"
    price: StrictStr | None = Field(default=None, max_length=64)
    quantity: StrictStr = Field(max_length=64)
    client_order_id: StrictStr | None = Field(default=None, min_length=1, max_length=36)
    reduce_only: bool = False
    stp: Literal["DEFAULT", "NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"] = "DEFAULT"


@router.post("/orders", tags=["trading"])
async def place_order(body: NewOrderBody, request: Request, acct: Account, rid: RequestId, d: Deps) -> Any:
    inst = _instrument(body.symbol)
    check_not_halted(d, inst.symbol)
    cmd = m.PlaceOrder(**_command_meta(request, rid), request_id=rid, account_id=acct, symbol=inst.symbol, side=body.side,
                       order_type=body.type, time_in_force=body.time_in_force, price=body.price,
                       quantity=body.quantity, client_order_id=body.client_order_id or default_client_order_id(rid),
                       reduce_only=body.reduce_only, stp=body.stp, price_bound=market_bound(d, inst, body.type, body.side),
                       band_reference=band_reference(d, inst))
    result = await _submit(d, request, acct, cmd, rid)
    if isinstance(result, JSONResponse):
        return result
    assert result.order_id is not None and d.readmodel is not None
    # as /fapi and Binance: answer with the order as matching left it (NEW resting, FILLED, EXPIRED, ...), once
    # the matcher is done with it and this account and its makers show the fills; if that takes longer than
    # the API's wait (a processor down), TIMEOUT: never a status the order may not end in
    if not await d.readmodel.wait_settled(acct, result.order_id, d.wait_s):
        raise PerplineError(Code.TIMEOUT, f"order {result.order_id} accepted; its outcome is not settled within the "
                                          "API's wait: query it (GET /api/v1/orders/{id})")
    order = d.readmodel.find_order(acct, result.order_id)
    out = {"request_id": rid, "order_id": str(result.order_id), "order": _order_json(order) if order else None}
    if order is not None and order.status in ("REJECTED", "EXPIRED"):  # why the matcher ended it
        code = d.readmodel.matcher_code(result.order_id)
        if code:
            out["code"], out["msg"] = code, _code_name(code)
    return out


def _code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return f"code {code}"


def band_reference(d: ApiDeps, inst: Instrument) -> str | None:
    """The price band's reference: the mark price (the last trade until the risk process publishes one)."""
    if d.readmodel is None:
        return None
    mark = d.readmodel.mark(inst.symbol)
    if mark is not None and not mark.index_stale:
        return mark.mark_price
    last = d.readmodel.trades(inst.symbol, 1)
    return last[-1].price if last else None


def market_bound(d: ApiDeps, inst: Instrument, order_type: str, side: str) -> str | None:
    """For a MARKET order: the protection bound from the book this API sees (None when that side is
    empty: the accounts processor then rejects it with NO_LIQUIDITY)."""
    if order_type != "MARKET" or d.readmodel is None:
        return None
    best = d.readmodel.best_opposite_ticks(inst.symbol, side)
    return inst.format_price(inst.market_bound_ticks(side, best)) if best > 0 else None


class AmendBody(BaseModel):
    symbol: StrictStr = Field(max_length=32)
    price: StrictStr | None = Field(default=None, max_length=64, description="new price; omit to keep it")
    quantity: StrictStr = Field(max_length=64, description="new total quantity (filled part included)")


async def amend_and_wait(d: ApiDeps, request: Request, acct: int, inst: Instrument, order: m.OrderView,
                         price: str | None, quantity: str) -> m.OrderView:
    """Amend an open order and wait (bounded) until the matcher answered and the views show it."""
    assert d.readmodel is not None
    rid = new_request_id()
    answered, _ = d.readmodel.amends(order.order_id)
    cmd = m.AmendOrder(**_command_meta(request, rid), request_id=rid, account_id=acct, symbol=inst.symbol,
                       order_id=order.order_id, price=price, quantity=quantity,
                       band_reference=band_reference(d, inst))
    await d.send("account.commands", str(acct), cmd)
    result = await d.readmodel.wait_result(acct, rid, d.wait_s)
    if result is None:
        raise PerplineError(Code.TIMEOUT, "no decision on the amend in time")
    if not result.ok:
        raise PerplineError(Code(result.code), result.msg)
    code = await d.readmodel.wait_amended(acct, order.order_id, answered, d.wait_s)
    if code == -1:
        raise PerplineError(Code.TIMEOUT, "the matcher has not answered the amend yet")
    if code != 0:
        raise PerplineError(Code.UNKNOWN_ORDER if code == Code.MATCHER_UNKNOWN_ORDER else Code(code),
                            "the matcher refused the amend")
    return d.readmodel.find_order(acct, order.order_id) or order


@router.put("/orders/{order_id}", tags=["trading"])
async def amend_order(order_id: Annotated[int, STRICT_UINT], body: AmendBody, request: Request, acct: Account, d: Deps) -> Any:
    inst = _instrument(body.symbol)
    assert d.readmodel is not None
    order = d.readmodel.find_order(acct, order_id)
    if order is None or order.symbol != inst.symbol or order.status not in ("NEW", "PARTIALLY_FILLED"):
        raise PerplineError(Code.UNKNOWN_ORDER, f"no open order {order_id} in {inst.symbol}")
    return _order_json(await amend_and_wait(d, request, acct, inst, order, body.price, body.quantity))


@router.delete("/orders/{order_id}", tags=["trading"])
async def cancel_order(order_id: Annotated[int, STRICT_UINT], symbol: str, request: Request, acct: Account, rid: RequestId, d: Deps) -> Any:
    inst = _instrument(symbol)
    cmd = m.CancelOrder(**_command_meta(request, rid), request_id=rid, account_id=acct, symbol=inst.symbol, order_id=order_id)
    result = await _submit(d, request, acct, cmd, rid)
    if isinstance(result, JSONResponse):
        return result
    order = await wait_order_closed(d, acct, order_id)
    if order is None:  # the matcher has not confirmed yet: the client polls GET /orders/{id}
        return JSONResponse({"request_id": rid, "order_id": str(order_id), "status": "CANCEL_PENDING"}, status_code=202)
    return _order_json(order)


async def wait_order_closed(d: ApiDeps, acct: int, order_id: int) -> m.OrderView | None:
    """The order once it reached a final status, within the API's bounded wait."""
    return (await wait_orders_closed(d, acct, [order_id]))[0]


async def wait_orders_closed(d: ApiDeps, acct: int, order_ids: list[int]) -> list[m.OrderView | None]:
    """Each order once it reached a final status (None if not yet), all under one bounded wait: a cancel-all
    waits for its orders together, not one fresh wait per order."""
    assert d.readmodel is not None
    readmodel = d.readmodel

    def closed(order_id: int) -> m.OrderView | None:
        order = readmodel.find_order(acct, order_id)
        return order if order is not None and order.status in TERMINAL else None

    await readmodel.wait_until(lambda: all(closed(oid) is not None for oid in order_ids), d.wait_s)
    return [closed(oid) for oid in order_ids]


@router.delete("/orders", tags=["trading"])
async def cancel_all(symbol: str, request: Request, acct: Account, rid: RequestId, d: Deps) -> Any:
    inst = _instrument(symbol)
    cmd = m.CancelAll(**_command_meta(request, rid), request_id=rid, account_id=acct, symbol=inst.symbol)
    result = await _submit(d, request, acct, cmd, rid)
    if isinstance(result, JSONResponse):
        return result
    closed = await wait_orders_closed(d, acct, list(result.order_ids))
    return {"request_id": rid, "symbol": inst.symbol,
            "orders": [_order_json(o) if o else {"order_id": str(oid), "status": "CANCEL_PENDING"}
                       for oid, o in zip(result.order_ids, closed, strict=True)]}


@router.get("/orders/{order_id}", tags=["trading"])
def get_order(order_id: Annotated[int, STRICT_UINT], acct: Account, d: Deps) -> Any:
    assert d.readmodel is not None
    order = d.readmodel.find_order(acct, order_id)
    if order is None:
        raise PerplineError(Code.UNKNOWN_ORDER, f"order {order_id} not found")
    return _order_json(order)


@router.get("/orders", tags=["trading"])
def list_orders(acct: Account, d: Deps, symbol: str | None = None, status: Literal["open", "all"] = "open") -> Any:
    assert d.readmodel is not None
    view = d.readmodel.snapshot_account(acct)
    orders = list(view.open_orders.values()) + (list(view.closed_orders.values()) if status == "all" else [])
    return [_order_json(o) for o in orders if symbol is None or o.symbol == symbol]


class LeverageBody(BaseModel):
    symbol: StrictStr = Field(max_length=32)
    leverage: Annotated[int, Field(ge=1, le=1000), STRICT_UINT]


@router.post("/leverage", tags=["trading"])
async def set_leverage(body: LeverageBody, request: Request, acct: Account, rid: RequestId, d: Deps) -> Any:
    inst = _instrument(body.symbol)
    cmd = m.SetLeverage(**_command_meta(request, rid), request_id=rid, account_id=acct, symbol=inst.symbol, leverage=body.leverage)
    result = await _submit(d, request, acct, cmd, rid)
    return result if isinstance(result, JSONResponse) else {"symbol": inst.symbol, "leverage": body.leverage}


@router.get("/requests/{req_id}", tags=["trading"])
async def get_request(req_id: str, acct: Account, d: Deps) -> Any:
    """The decision on one of the caller's own requests (request ids are unique per account only)."""
    assert d.readmodel is not None
    result = d.readmodel.result(acct, req_id)
    if result is None:
        return {"request_id": req_id, "status": "PENDING"}
    return {"request_id": req_id, "status": "DONE" if result.ok else "REJECTED", "code": result.code, "msg": result.msg,
            "order_id": str(result.order_id) if result.order_id else None}


# --- account --------------------------------------------------------------------------


def _balances(d: ApiDeps, acct: int) -> dict[str, Any]:
    assert d.readmodel is not None
    view = d.readmodel.snapshot_account(acct)
    return {"balances": [_strip(b) for b in view.balances.values()]}


@router.get("/account/balances", tags=["account"])
def balances(acct: Account, d: Deps) -> Any:
    return _balances(d, acct)["balances"]


@router.get("/account/positions", tags=["account"])
def positions(acct: Account, d: Deps) -> Any:
    """Each position with its mark price (the risk process's, else the last trade), unrealised PnL at
    that mark and liquidation price (the one formula, perpline.risk.formulas)."""
    assert d.readmodel is not None
    return [_position_json(d, p) for p in d.readmodel.snapshot_account(acct).positions.values()]


def _position_json(d: ApiDeps, p: m.PositionChanged) -> dict[str, Any]:
    out = _strip(p)
    inst = load_catalog().get(p.symbol)
    if inst is None or d.readmodel is None:
        return out
    size_lots = inst.parse_signed_qty(p.size)
    mark_ticks = d.readmodel.mark_ticks(inst.symbol)
    cost, margin = parse_amount(p.cost), parse_amount(p.margin)
    pnl = formulas.unrealized_pnl(inst, size_lots, cost, mark_ticks) if mark_ticks else 0
    out["mark_price"] = inst.format_price(mark_ticks) if mark_ticks else None
    out["unrealized_pnl"] = format_amount(pnl)
    out["liquidation_price"] = inst.format_price(formulas.liquidation_ticks(inst, size_lots, cost, margin))
    return out


@router.get("/account/trades", tags=["account"])
def my_trades(acct: Account, d: Deps, symbol: str | None = None, limit: Annotated[int, Query(ge=1, le=1000), STRICT_UINT] = 500) -> Any:
    assert d.readmodel is not None
    fills = [f for f in d.readmodel.snapshot_account(acct).fills if symbol is None or f.symbol == symbol]
    return [_strip(f) for f in fills[-limit:]]


MAX_JOURNALS = 1000


@router.get("/account/journals", tags=["account"])
def journals(acct: Account, d: Deps, ref_type: str | None = None, limit: Annotated[int, Query(ge=1, le=MAX_JOURNALS), STRICT_UINT] = 200) -> Any:
    """The account's ledger postings from ClickHouse (history; the read models hold current state)."""
    client = d.clickhouse()
    where = "account_id = {a:UInt64}" + (" AND ref_type = {r:String}" if ref_type else "")
    rows = client.query(
        "SELECT journal_id, ref_type, ref_id, symbol, ledger_account, asset, amount, trace_id, ts_ms "
        f"FROM ledger_postings FINAL WHERE {where} ORDER BY ts_ms DESC, journal_id, posting_index LIMIT {{n:UInt32}}",
        parameters={"a": acct, "r": ref_type or "", "n": limit}).result_rows
    keys = ("journal_id", "ref_type", "ref_id", "symbol", "ledger_account", "asset", "amount", "trace_id", "ts_ms")
    return [{**dict(zip(keys, row, strict=True)), "amount": _decimal_amount(row[6])} for row in rows]


@router.get("/account/statement", tags=["account"])
def statement(acct: Account, d: Deps, from_ms: Annotated[int, Query(ge=0), STRICT_UINT] = 0, to_ms: Annotated[int, Query(ge=0), STRICT_UINT] = 2**62,
              asset: str = Query("USDT", max_length=16)) -> Any:
    """Opening balance, every journal of the period with its running balance, closing balance (from the
    ledger; `agrees_with_ledger` checks the closing against the balance computed on its own)."""
    found = Audit(d.clickhouse()).statement(acct, from_ms, to_ms, asset)
    return {**found, "opening": _decimal_amount(found["opening"]), "closing": _decimal_amount(found["closing"]),
            "lines": [{**line, "change": _decimal_amount(line["change"]), "balance": _decimal_amount(line["balance"])}
                      for line in found["lines"]]}


@router.get("/account/ledger-view", tags=["account"])
def ledger_view(acct: Account, d: Deps, at_ms: Annotated[int | None, Query(ge=0), STRICT_UINT] = None) -> Any:
    """The account at an instant, from the ledger alone: balances by kind, fees, funding, realised PnL,
    deposits, withdrawals and liquidation losses to date."""
    view = Audit(d.clickhouse()).account(acct, at_ms)
    return {asset: {k: ({kk: _decimal_amount(vv) for kk, vv in v.items()} if isinstance(v, dict) else _decimal_amount(v))
                    for k, v in fields.items()} for asset, fields in view.items()}


@router.get("/account/view", tags=["account"])
def account_view(acct: Account, d: Deps, at_ms: Annotated[int | None, Query(ge=0), STRICT_UINT] = None) -> Any:
    """The full account at an instant (now by default) from ClickHouse: balances by kind, fees, funding,
    realised PnL; positions with entry, mark, unrealised PnL, margin and liquidation price; open orders."""
    view = Audit(d.clickhouse()).account_view(acct, at_ms)
    ledger = {asset: {k: ({kk: _decimal_amount(vv) for kk, vv in v.items()} if isinstance(v, dict) else _decimal_amount(v))
                      for k, v in fields.items()} for asset, fields in view["ledger"].items()}
    return {**view, "ledger": ledger}


@router.get("/account/trace/{key}", tags=["account"])
def trace(key: str, acct: Account, d: Deps) -> Any:
    """What a trace id, client order id or trade id caused in the caller's account, in order."""
    if len(key) > 64:
        raise PerplineError(Code.MALFORMED, "key too long")
    return own_trace_rows(Audit(d.clickhouse()).trace(key), acct)


def own_trace_rows(rows: list[dict[str, Any]], acct: int) -> list[dict[str, Any]]:
    """The rows of a trace that belong to this account (never account 42's for account 4)."""
    own = re.compile(rf'"account_id":{acct}(?!\d)|account {acct} ')
    return [r for r in rows if r["source"] != "matcher_events" and own.search(r["detail"])]


def _decimal_amount(value: Decimal) -> str:
    """A Decimal(38, 8) from ClickHouse as our canonical 8-place string (exact: no float on the way)."""
    return format_amount(int(value.scaleb(8)))


# --- market ---------------------------------------------------------------------------


@router.get("/market/instruments", tags=["market"])
def instruments() -> Any:
    return [_instrument_json(i) for i in load_catalog().instruments.values()]


@router.get("/market/depth", tags=["market"])
def depth(symbol: str, d: Deps, limit: Annotated[int, Query(ge=1, le=1000), STRICT_UINT] = 20) -> Any:
    """A snapshot of the top `limit` levels as of matcher `seq`; follow it with /market/depth/updates."""
    inst = _instrument(symbol)
    assert d.readmodel is not None
    seq, bids, asks = d.readmodel.depth_at(inst.symbol, limit)
    return {"symbol": inst.symbol, "seq": seq,
            "bids": [[p, inst.format_qty(q)] for p, q in bids], "asks": [[p, inst.format_qty(q)] for p, q in asks]}


@router.get("/market/depth/updates", tags=["market"])
def depth_updates(symbol: str, after_seq: Annotated[int, STRICT_UINT], d: Deps) -> Any:
    """Every level change after matcher seq `after_seq`, in order, as [seq, side, price, new quantity]
    (quantity "0.000": the level is gone), and the seq they bring the book to. Apply them to a snapshot
    taken at `after_seq`; the next call passes the returned seq. 409 when `after_seq` is too old (the
    changes were dropped): take a new snapshot."""
    inst = _instrument(symbol)
    assert d.readmodel is not None
    found = d.readmodel.depth_changes(inst.symbol, after_seq)
    if found is None:
        raise PerplineError(Code.STALE_SNAPSHOT, f"changes after seq {after_seq} are no longer kept: take a new snapshot")
    seq, changes = found
    return {"symbol": inst.symbol, "after_seq": after_seq, "seq": seq,
            "changes": [[c_seq, side, price, inst.format_qty(lots)] for c_seq, side, price, lots in changes]}


@router.get("/market/trades", tags=["market"])
def trades(symbol: str, d: Deps, limit: Annotated[int, Query(ge=1, le=1000), STRICT_UINT] = 100) -> Any:
    inst = _instrument(symbol)
    assert d.readmodel is not None
    return [{"trade_id": t.trade_id, "price": t.price, "quantity": t.quantity, "taker_side": t.taker_side,
             "ts_ms": t.ts_ms, "seq": t.seq} for t in d.readmodel.trades(inst.symbol, limit)]



@router.get("/market/mark", tags=["market"])
def mark_price(symbol: str, d: Deps) -> Any:
    """Mark and index price, the funding-rate estimate and the next funding time (from the risk process)."""
    inst = _instrument(symbol)
    assert d.readmodel is not None
    mark = d.readmodel.mark(inst.symbol)
    if mark is None:
        raise PerplineError(Code.NOT_READY, f"no mark price for {inst.symbol} yet")
    return _strip(mark)


@router.get("/market/funding", tags=["market"])
def funding_history(symbol: str, d: Deps, limit: Annotated[int, Query(ge=1, le=1000), STRICT_UINT] = 100) -> Any:
    """Settled funding rounds of a symbol, oldest first."""
    inst = _instrument(symbol)
    assert d.readmodel is not None
    return [_strip(r) for r in d.readmodel.funding_rounds(inst.symbol)[-limit:]]


@router.get("/account/funding", tags=["account"])
def account_funding(acct: Account, d: Deps, symbol: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000), STRICT_UINT] = 100) -> Any:
    """The caller's funding payments (amount: positive paid, negative received), oldest first."""
    assert d.readmodel is not None
    rows = [f for f in d.readmodel.snapshot_account(acct).funding if symbol is None or f.symbol == symbol]
    return [_strip(f) for f in rows[-limit:]]

# --- rendering ------------------------------------------------------------------------


def _strip(msg: msgspec.Struct) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(msg)
    for key in ("type", "causation_id"):
        out.pop(key, None)
    return out


def _order_json(order: m.OrderView) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(order)
    out["order_id"] = str(order.order_id)
    return out


def _instrument_json(i: Instrument) -> dict[str, Any]:
    return {"symbol": i.symbol, "base_asset": i.base_asset, "quote_asset": i.quote_asset, "margin_asset": i.margin_asset,
            "tick_size": i.tick_size, "lot_size": i.lot_size, "min_qty": i.format_qty(i.min_qty_lots),
            "max_qty": i.format_qty(i.max_qty_lots), "min_notional": format_amount(i.min_notional),
            "max_leverage": i.max_leverage, "default_leverage": i.default_leverage,
            "maker_fee_rate": format_rate(i.maker_fee_e8), "taker_fee_rate": format_rate(i.taker_fee_e8),
            "brackets": [{"notional_cap": format_amount(b.notional_cap), "max_leverage": b.max_leverage,
                          "maint_margin_rate": format_rate(b.maint_margin_e8), "maint_amount": format_amount(b.maint_amount)}
                         for b in i.brackets]}


# --- API keys -------------------------------------------------------------------------


class NewKeyBody(BaseModel):
    permissions: list[Literal["read", "trade", "withdraw", "manage_keys"]] = Field(
        default=["read", "trade"], min_length=1, max_length=len(PERMISSIONS))
    label: StrictStr = Field(default="", max_length=64)


KEY_VISIBLE_S = 5.0


@dataclass(frozen=True)
class KeyManager:
    """Who asks to issue or revoke a key: the user, the key it signed with ("" for the owner: a web
    session or the trusted demo header), what it may grant, and the request's one-use nonce."""

    user_id: int
    api_key: str
    permissions: tuple[str, ...]
    nonce: str


async def key_manager(request: Request) -> KeyManager:
    """Key management needs the owner (a web session; the trusted header on the demo stack) or a key
    holding manage_keys; such a key may only grant or revoke what it holds (registry.may_grant)."""
    d = deps(request)
    if request.headers.get("authorization") is not None and request.headers.get(auth.API_KEY_HEADER) is None:
        claims = await sessions.bearer_claims(request, d)
        return KeyManager(claims.user_id, "", PERMISSIONS, auth.request_nonce())
    if request.headers.get(auth.API_KEY_HEADER) is not None or not d.trust_account_header:
        caller = await auth.signed_caller(request, d.registry, d.guard, auth.MANAGE)
        assert caller.api_key is not None
        return KeyManager(caller.user_id, caller.api_key, caller.permissions, auth.request_nonce(caller.signature))
    return KeyManager(auth.header_account(request), "", PERMISSIONS, auth.request_nonce())


Manager = Annotated[KeyManager, Depends(key_manager)]
NOT_YOURS = "Invalid API-key, IP, or permissions for action."


def _check_grant(who: KeyManager, permissions: Any) -> None:
    if who.api_key and not may_grant(who.permissions, permissions):
        raise PerplineError(Code.BAD_API_KEY, f"{NOT_YOURS} A key may only grant or revoke permissions it holds.")


@router.post("/keys", tags=["keys"])
async def create_key(body: NewKeyBody, request: Request, who: Manager, d: Deps) -> Any:
    """A new API key for the caller; the secret is in this answer only (stored encrypted). Needs the
    owner or a key with manage_keys and every permission asked for; a replay is refused everywhere."""
    from perpline.auth import crypto  # noqa: PLC0415

    permissions = sorted(set(body.permissions))
    _check_grant(who, permissions)
    api_key, secret = crypto.new_api_key(), crypto.new_api_secret()
    issued = m.ApiKeyIssued(**_meta(request, f"key:{api_key[:8]}"), api_key=api_key, user_id=who.user_id,
                            secret_enc=crypto.encrypt(d.secret_key, secret), permissions=permissions,  # type: ignore[arg-type]
                            label=body.label, nonce=who.nonce, issued_by=who.api_key)
    await _decided(d, request, str(who.user_id), issued, who.nonce)
    if d.registry is None or d.registry.get(api_key) is None:  # the issuing key lost its rights meanwhile
        raise PerplineError(Code.BAD_API_KEY, NOT_YOURS)
    return {"api_key": api_key, "api_secret": secret, "permissions": permissions, "label": body.label}


@router.get("/keys", tags=["keys"])
def list_keys(acct: Account, d: Deps) -> Any:
    keys = d.registry.keys_of(acct) if d.registry is not None else []
    return [{"api_key": k.api_key, "permissions": list(k.permissions), "label": k.label, "created_ms": k.created_ms,
             "revoked": k.revoked} for k in keys]


@router.delete("/keys/{api_key}", tags=["keys"])
async def revoke_key(api_key: str, request: Request, who: Manager, d: Deps) -> Any:
    """Revoke one of the caller's keys: the owner, or a key with manage_keys holding every permission
    of the key it revokes (itself included)."""
    found = d.registry.get(api_key) if d.registry is not None else None
    if found is None or found.user_id != who.user_id:
        raise PerplineError(Code.BAD_API_KEY, "no such key of yours")
    _check_grant(who, found.permissions)
    revoked = m.ApiKeyRevoked(**_meta(request, f"revoke:{api_key[:8]}"), api_key=api_key, user_id=who.user_id,
                              nonce=who.nonce, revoked_by=who.api_key)
    await _decided(d, request, str(who.user_id), revoked, who.nonce)
    if not found.revoked:
        raise PerplineError(Code.BAD_API_KEY, NOT_YOURS)
    return {"api_key": api_key, "revoked": True}


async def _decided(d: ApiDeps, request: Request, key: str, record: msgspec.Struct, nonce: str) -> None:
    """Publish a key record and wait until this replica has applied the record that took `nonce`:
    ours, or (a replay of this signed request, on any replica) another one, then REPLAYED_REQUEST
    and ours changes nothing anywhere."""
    registry = d.registry
    if registry is None:
        raise PerplineError(Code.BROKER_UNAVAILABLE, "key registry not loaded")
    if registry.nonce_winner(nonce) is None:
        await d.send("auth.keys", key, record)
        await _until(d, lambda: registry.nonce_winner(nonce) is not None)
    if registry.nonce_winner(nonce) != request.state.trace_id:
        raise PerplineError(Code.REPLAYED_REQUEST, "this signed request was already received")


async def _until(d: ApiDeps, done: Any, timeout_s: float = KEY_VISIBLE_S) -> None:
    """Wait until this replica's registry shows a key change (other replicas follow within moments)."""
    assert d.readmodel is not None
    if not await d.readmodel.wait_until(done, timeout_s):
        raise PerplineError(Code.TIMEOUT, "the key change is not visible yet; retry the read shortly")
