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

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictStr

from perpline.accounts.order_status import EXPIRED, REJECTED
from perpline.api import auth, errors, models, native, ratelimit
from perpline.api.deps import ApiDeps, deps, instrument, request_deps
from perpline.api.models import ok
from perpline.api.params import STRICT_UINT
from perpline.api.service import account, history, market, orders
from perpline.api.service import keys as key_service
from perpline.api.service import sessions as session_service
from perpline.api.service.keys import KeyManager
from perpline.auth.registry import PERMISSIONS
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.ids import default_client_order_id, new_request_id
from perpline.contracts.units import format_amount

router = APIRouter(prefix="/api/v1", responses={
    **errors.documented(*errors.COMMON_ERRORS),
    202: {"model": errors.Pending, "description": "sent, no decision yet: poll GET /api/v1/requests/{request_id}"}})


async def _identify(request: Request, permission: str) -> int:
    """A signed request (API key), a web session (Bearer JWT: every permission of its user) or, only
    where trusted, a bare X-Account-Id; charged its route's weight and orders (perpline.api.ratelimit)
    as the API key, or as the account for a session or header."""
    d = deps(request)
    api_key: str | None = None
    if request.headers.get("authorization") is not None and request.headers.get(auth.API_KEY_HEADER) is None:
        user_id = (await session_service.bearer_claims(request, d)).user_id
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


async def request_id(idempotency_key: Annotated[str | None, Header()] = None) -> str:
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 64:
        raise PerplineError(Code.MALFORMED, "Idempotency-Key must be 1 to 64 characters")
    return idempotency_key or new_request_id()


Account = Annotated[int, Depends(account_id)]
WithdrawAccount = Annotated[int, Depends(withdrawing_account)]
FaucetAccount = Annotated[int, Depends(faucet_account)]
RequestId = Annotated[str, Depends(request_id)]
Deps = Annotated[ApiDeps, Depends(request_deps)]


# --- wallet ---------------------------------------------------------------------------


class Transfer(BaseModel):
    asset: StrictStr = Field(max_length=16)
    amount: StrictStr = Field(max_length=64, description="decimal string, e.g. \"1000.5\"")


@router.post("/wallet/deposits", tags=["wallet"], responses=ok(models.Transferred))
async def deposit(body: Transfer, request: Request, acct: FaucetAccount, rid: RequestId, d: Deps) -> Any:
    await orders.transfer(d, request, acct, "deposit", body.asset, body.amount, rid)
    return {"request_id": rid, "status": "DONE", "balances": _balances(d, acct)}


@router.post("/wallet/withdrawals", tags=["wallet"], responses=ok(models.Transferred))
async def withdraw(body: Transfer, request: Request, acct: WithdrawAccount, rid: RequestId, d: Deps) -> Any:
    await orders.transfer(d, request, acct, "withdraw", body.asset, body.amount, rid)
    return {"request_id": rid, "status": "DONE", "balances": _balances(d, acct)}


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


@router.post("/orders", tags=["trading"], responses=ok(models.PlacedOrder))
async def place_order(body: NewOrderBody, request: Request, acct: Account, rid: RequestId, d: Deps) -> Any:
    """Answered, as /fapi and Binance, with the order as matching left it (NEW resting, FILLED, EXPIRED,
    ...) once the matcher is done with it; TIMEOUT rather than a status the order may not end in."""
    inst = instrument(body.symbol)
    terms = orders.OrderTerms(body.side, body.type, body.time_in_force, body.price, body.quantity,
                              body.client_order_id or default_client_order_id(rid), body.reduce_only, body.stp)
    placed = await orders.place(d, request, acct, rid, inst, terms)
    out: dict[str, Any] = {"request_id": rid, "order_id": str(placed.order.order_id), "order": native.order(placed.order)}
    if placed.order.status in (REJECTED, EXPIRED) and placed.matcher_code:  # why the matcher ended it
        out["code"], out["msg"] = placed.matcher_code, orders.code_of(placed.matcher_code).name
    return out


class AmendBody(BaseModel):
    symbol: StrictStr = Field(max_length=32)
    price: StrictStr | None = Field(default=None, max_length=64, description="new price; omit to keep it")
    quantity: StrictStr = Field(max_length=64, description="new total quantity (filled part included)")


@router.put("/orders/{order_id}", tags=["trading"], responses=ok(models.NativeOrder))
async def amend_order(order_id: Annotated[int, STRICT_UINT], body: AmendBody, request: Request, acct: Account, d: Deps) -> Any:
    inst = instrument(body.symbol)
    order = orders.open_order(d, acct, inst, order_id)
    return native.order(await orders.amend(d, request, acct, inst, order, body.price, body.quantity))


@router.delete("/orders/{order_id}", tags=["trading"], responses={**ok(models.NativeOrder), 202: {
    "model": errors.Pending | models.CancelAccepted, "description": "sent, not confirmed yet: poll the order"}})
async def cancel_order(order_id: Annotated[int, STRICT_UINT], symbol: str, request: Request, acct: Account, rid: RequestId, d: Deps) -> Any:
    order = await orders.cancel(d, request, acct, instrument(symbol), order_id, rid)
    if order is None:  # the matcher has not confirmed yet: the client polls GET /orders/{id}
        return JSONResponse({"request_id": rid, "order_id": str(order_id), "status": "CANCEL_PENDING"}, status_code=202)
    return native.order(order)


@router.delete("/orders", tags=["trading"], responses=ok(models.CanceledAll))
async def cancel_all(symbol: str, request: Request, acct: Account, rid: RequestId, d: Deps) -> Any:
    inst = instrument(symbol)
    closed = await orders.cancel_all(d, request, acct, inst, rid)
    return {"request_id": rid, "symbol": inst.symbol,
            "orders": [native.order(o) if o else {"order_id": str(oid), "status": "CANCEL_PENDING"} for oid, o in closed]}


@router.get("/orders/{order_id}", tags=["trading"], responses=ok(models.NativeOrder))
def get_order(order_id: Annotated[int, STRICT_UINT], acct: Account, d: Deps) -> Any:
    order = d.rm().find_order(acct, order_id)
    if order is None:
        raise PerplineError(Code.UNKNOWN_ORDER, f"order {order_id} not found")
    return native.order(order)


@router.get("/orders", tags=["trading"], responses=ok(list[models.NativeOrder]))
def list_orders(acct: Account, d: Deps, symbol: str | None = None, status: Literal["open", "all"] = "open") -> Any:
    found = account.orders(d, acct, status)
    return [native.order(o) for o in found if symbol is None or o.symbol == symbol]


class LeverageBody(BaseModel):
    symbol: StrictStr = Field(max_length=32)
    leverage: Annotated[int, Field(ge=1, le=1000), STRICT_UINT]


@router.post("/leverage", tags=["trading"], responses=ok(models.LeverageSet))
async def set_leverage(body: LeverageBody, request: Request, acct: Account, rid: RequestId, d: Deps) -> Any:
    inst = instrument(body.symbol)
    await orders.set_leverage(d, request, acct, inst, body.leverage, rid)
    return {"symbol": inst.symbol, "leverage": body.leverage}


@router.get("/requests/{req_id}", tags=["trading"], responses=ok(models.RequestOutcome))
async def get_request(req_id: str, acct: Account, d: Deps) -> Any:
    """The decision on one of the caller's own requests (request ids are unique per account only)."""
    result = orders.outcome(d, acct, req_id)
    if result is None:
        return {"request_id": req_id, "status": "PENDING"}
    return {"request_id": req_id, "status": "DONE" if result.ok else "REJECTED", "code": result.code, "msg": result.msg,
            "order_id": str(result.order_id) if result.order_id else None}


# --- account --------------------------------------------------------------------------


def _balances(d: ApiDeps, acct: int) -> list[dict[str, Any]]:
    return [native.strip(b) for b in account.balances(d, acct)]


@router.get("/account/balances", tags=["account"], responses=ok(list[models.Balance]))
def balances(acct: Account, d: Deps) -> Any:
    return _balances(d, acct)


@router.get("/account/positions", tags=["account"], responses=ok(list[models.NativePosition]))
def positions(acct: Account, d: Deps) -> Any:
    """Each position with its mark price (the risk process's, else the last trade), unrealised PnL at
    that mark and liquidation price (the one formula, perpline.risk.formulas)."""
    return [native.position(p) for p in account.positions(d, acct, "all")]


@router.get("/account/trades", tags=["account"], responses=ok(list[models.Fill]))
def my_trades(acct: Account, d: Deps, symbol: str | None = None, limit: Annotated[int, Query(ge=1, le=1000), STRICT_UINT] = 500) -> Any:
    fills = [f for f in account.fills(d, acct) if symbol is None or f.symbol == symbol]
    return [native.strip(f) for f in fills[-limit:]]


@router.get("/account/journals", tags=["account"], responses=ok(list[models.Journal]))
def journals(acct: Account, d: Deps, ref_type: str | None = None,
             limit: Annotated[int, Query(ge=1, le=history.MAX_JOURNALS), STRICT_UINT] = 200) -> Any:
    """The account's ledger postings from ClickHouse (history; the read models hold current state)."""
    return [{**row, "amount": _decimal_amount(row["amount"])} for row in history.journals(d, acct, ref_type, limit)]


@router.get("/account/statement", tags=["account"], responses=ok(models.Statement))
def statement(acct: Account, d: Deps, from_ms: Annotated[int, Query(ge=0), STRICT_UINT] = 0, to_ms: Annotated[int, Query(ge=0), STRICT_UINT] = 2**62,
              asset: str = Query("USDT", max_length=16)) -> Any:
    """Opening balance, every journal of the period with its running balance, closing balance (from the
    ledger; `agrees_with_ledger` checks the closing against the balance computed on its own)."""
    found = history.statement(d, acct, from_ms, to_ms, asset)
    return {**found, "opening": _decimal_amount(found["opening"]), "closing": _decimal_amount(found["closing"]),
            "lines": [{**line, "change": _decimal_amount(line["change"]), "balance": _decimal_amount(line["balance"])}
                      for line in found["lines"]]}


@router.get("/account/ledger-view", tags=["account"], responses=ok(models.LedgerView))
def ledger_view(acct: Account, d: Deps, at_ms: Annotated[int | None, Query(ge=0), STRICT_UINT] = None) -> Any:
    """The account at an instant, from the ledger alone: balances by kind, fees, funding, realised PnL,
    deposits, withdrawals and liquidation losses to date."""
    return _ledger_json(history.ledger_view(d, acct, at_ms))


@router.get("/account/view", tags=["account"], responses=ok(models.AccountAtInstant))
def account_view(acct: Account, d: Deps, at_ms: Annotated[int | None, Query(ge=0), STRICT_UINT] = None) -> Any:
    """The full account at an instant (now by default) from ClickHouse: balances by kind, fees, funding,
    realised PnL; positions with entry, mark, unrealised PnL, margin and liquidation price; open orders."""
    view = history.account_view(d, acct, at_ms)
    return {**view, "ledger": _ledger_json(view["ledger"])}


def _ledger_json(view: dict[str, Any]) -> dict[str, Any]:
    return {asset: {k: ({kk: _decimal_amount(vv) for kk, vv in v.items()} if isinstance(v, dict) else _decimal_amount(v))
                    for k, v in fields.items()} for asset, fields in view.items()}


@router.get("/account/trace/{key}", tags=["account"], responses=ok(list[models.TraceRow]))
def trace(key: str, acct: Account, d: Deps) -> Any:
    """What a trace id, client order id or trade id caused in the caller's account, in order."""
    return history.trace(d, acct, key)


def _decimal_amount(value: Decimal) -> str:
    """A Decimal(38, 8) from ClickHouse as our canonical 8-place string (exact: no float on the way)."""
    return format_amount(int(value.scaleb(8)))


# --- market ---------------------------------------------------------------------------


@router.get("/market/instruments", tags=["market"], responses=ok(list[models.NativeInstrument]))
def instruments() -> Any:
    return [native.instrument(i) for i in market.instruments()]


@router.get("/market/depth", tags=["market"], responses=ok(models.NativeDepth))
def depth(symbol: str, d: Deps, limit: Annotated[int, Query(ge=1, le=1000), STRICT_UINT] = 20) -> Any:
    """A snapshot of the top `limit` levels as of matcher `seq`; follow it with /market/depth/updates."""
    inst = instrument(symbol)
    return native.depth(inst, market.depth(d, inst, limit))


@router.get("/market/depth/updates", tags=["market"], responses=ok(models.DepthUpdates))
def depth_updates(symbol: str, after_seq: Annotated[int, STRICT_UINT], d: Deps) -> Any:
    """Every level change after matcher seq `after_seq`, in order, as [seq, side, price, new quantity]
    (quantity "0.000": the level is gone), and the seq they bring the book to. Apply them to a snapshot
    taken at `after_seq`; the next call passes the returned seq. 409 when `after_seq` is too old (the
    changes were dropped): take a new snapshot."""
    inst = instrument(symbol)
    seq, changes = market.depth_changes(d, inst, after_seq)
    return {"symbol": inst.symbol, "after_seq": after_seq, "seq": seq,
            "changes": [[c_seq, side, price, inst.format_qty(lots)] for c_seq, side, price, lots in changes]}


@router.get("/market/trades", tags=["market"], responses=ok(list[models.NativeTrade]))
def trades(symbol: str, d: Deps, limit: Annotated[int, Query(ge=1, le=1000), STRICT_UINT] = 100) -> Any:
    return native.trades(market.trades(d, instrument(symbol), limit))


@router.get("/market/mark", tags=["market"], responses=ok(models.Mark))
def mark_price(symbol: str, d: Deps) -> Any:
    """Mark and index price, the funding-rate estimate and the next funding time (from the risk process)."""
    inst = instrument(symbol)
    mark = market.mark(d, inst)
    if mark is None:
        raise PerplineError(Code.NOT_READY, f"no mark price for {inst.symbol} yet")
    return native.strip(mark)


@router.get("/market/funding", tags=["market"], responses=ok(list[models.FundingRound]))
def funding_history(symbol: str, d: Deps, limit: Annotated[int, Query(ge=1, le=1000), STRICT_UINT] = 100) -> Any:
    """Settled funding rounds of a symbol, oldest first."""
    return [native.strip(r) for r in market.funding_rounds(d, instrument(symbol))[-limit:]]


@router.get("/account/funding", tags=["account"], responses=ok(list[models.FundingPayment]))
def account_funding(acct: Account, d: Deps, symbol: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000), STRICT_UINT] = 100) -> Any:
    """The caller's funding payments (amount: positive paid, negative received), oldest first."""
    return [native.strip(f) for f in account.funding(d, acct, symbol)[-limit:]]

# --- API keys -------------------------------------------------------------------------


class NewKeyBody(BaseModel):
    permissions: list[Literal["read", "trade", "withdraw", "manage_keys"]] = Field(
        default=["read", "trade"], min_length=1, max_length=len(PERMISSIONS))
    label: StrictStr = Field(default="", max_length=64)


async def key_manager(request: Request) -> KeyManager:
    """Key management needs the owner (a web session; the trusted header on the demo stack) or a key
    holding manage_keys; such a key may only grant or revoke what it holds (registry.may_grant)."""
    d = deps(request)
    if request.headers.get("authorization") is not None and request.headers.get(auth.API_KEY_HEADER) is None:
        claims = await session_service.bearer_claims(request, d)
        return KeyManager(claims.user_id, "", PERMISSIONS, auth.request_nonce())
    if request.headers.get(auth.API_KEY_HEADER) is not None or not d.trust_account_header:
        caller = await auth.signed_caller(request, d.registry, d.guard, auth.MANAGE)
        assert caller.api_key is not None
        return KeyManager(caller.user_id, caller.api_key, caller.permissions, auth.request_nonce(caller.signature))
    return KeyManager(auth.header_account(request), "", PERMISSIONS, auth.request_nonce())


Manager = Annotated[KeyManager, Depends(key_manager)]


@router.post("/keys", tags=["keys"], responses=ok(models.NewKey))
async def create_key(body: NewKeyBody, request: Request, who: Manager, d: Deps) -> Any:
    """A new API key for the caller; the secret is in this answer only (stored encrypted). Needs the
    owner or a key with manage_keys and every permission asked for; a replay is refused everywhere."""
    permissions = sorted(set(body.permissions))
    api_key, secret = await key_service.issue(d, request, who, permissions, body.label)
    return {"api_key": api_key, "api_secret": secret, "permissions": permissions, "label": body.label}


@router.get("/keys", tags=["keys"], responses=ok(list[models.KeyInfo]))
def list_keys(acct: Account, d: Deps) -> Any:
    return [{"api_key": k.api_key, "permissions": list(k.permissions), "label": k.label, "created_ms": k.created_ms,
             "revoked": k.revoked} for k in key_service.keys_of(d, acct)]


@router.delete("/keys/{api_key}", tags=["keys"], responses=ok(models.KeyRevoked))
async def revoke_key(api_key: str, request: Request, who: Manager, d: Deps) -> Any:
    """Revoke one of the caller's keys: the owner, or a key with manage_keys holding every permission
    of the key it revokes (itself included)."""
    await key_service.revoke(d, request, who, api_key)
    return {"api_key": api_key, "revoked": True}
