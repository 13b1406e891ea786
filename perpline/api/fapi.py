"""The Binance USD-M compatible subset, /fapi: what ccxt's binanceusdm needs (shared/BINANCE_USDM_SUBSET.md).

Same commands, topics and read models as the native API; only the wire differs: Binance symbols
(BTCUSDT), form-encoded signed requests, Binance error codes. Writes answer once the order has
settled in the read model (the matcher finished with it and the account shows those fills), so a
client reads its own writes.

Market data (klines, markPriceKlines, 24h ticker) comes from the read model's aggregates
(perpline.market.candles); mark, index and funding from the risk process (prices.mark, funding.rounds).
Every rule is the service layer's (perpline.api.service); this module parses Binance's parameters
and renders Binance's shapes (perpline.api.binance).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from perpline.accounts.order_status import EXPIRED, REJECTED
from perpline.api import auth, binance, errors, models, ratelimit
from perpline.api.deps import ApiDeps, deps, instrument, now_ms, request_deps
from perpline.api.models import ok
from perpline.api.service import account, market, orders
from perpline.contracts import messages as m
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.ids import new_request_id
from perpline.contracts.instruments import Instrument
from perpline.contracts.units import format_amount, format_rate, parse_uint

T = TypeVar("T")
router = APIRouter(prefix="/fapi", tags=["binance usd-m"], responses=errors.documented(*errors.COMMON_ERRORS))
CLIENT_ORDER_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")  # fullmatch: `$` would take a final newline
MAX_LIMIT = 1000


def _limit(raw: str | None, default: int, maximum: int = MAX_LIMIT) -> int:
    return default if raw is None else parse_uint(raw, what="limit", minimum=1, maximum=maximum)


def _int_param(params: dict[str, str], name: str) -> int | None:
    """An optional integer parameter (absent or empty: None), through the one strict parser."""
    raw = params.get(name)
    return None if raw is None or raw == "" else parse_uint(raw, what=name)


def _window(params: dict[str, str]) -> tuple[int | None, int | None]:
    return _int_param(params, "startTime"), _int_param(params, "endTime")


async def signed_caller(request: Request, permission: str) -> auth.Caller:
    """The caller of a signed route, charged its route's weight (perpline.api.ratelimit: the address
    was charged before the request got here). The routes' dependency, and the fast path's caller."""
    d = deps(request)
    caller = await auth.signed_caller(request, d.registry, d.guard, permission)
    ratelimit.charge_caller(request, caller.api_key, caller.user_id)
    return caller


def _signed(permission: str) -> Callable[..., Any]:
    async def dependency(request: Request) -> auth.Caller:
        return await signed_caller(request, permission)

    return dependency


async def _public(request: Request) -> dict[str, str]:  # async: no worker-thread hop (deps.request_deps)
    return dict(request.query_params)  # a name given twice was refused by the app's middleware


Public = Annotated[dict[str, str], Depends(_public)]
Read = Annotated[auth.Caller, Depends(_signed(auth.READ))]
Trade = Annotated[auth.Caller, Depends(_signed(auth.TRADE))]
Deps = Annotated[ApiDeps, Depends(request_deps)]


def _symbols(symbol: str | None) -> list[Instrument]:
    """One symbol's instrument, or every instrument when none is named."""
    return [instrument(symbol)] if symbol else market.instruments()


# --- public market data ---------------------------------------------------------------------


@router.get("/v1/ping", responses=ok(models.Empty))
def ping(_: Public) -> Any:
    return {}


@router.get("/v1/time", responses=ok(models.ServerTime))
def server_time(_: Public) -> Any:
    return {"serverTime": now_ms()}


@router.get("/v1/exchangeInfo", responses=ok(models.BinanceExchangeInfo))
def exchange_info(d: Deps, _: Public) -> Any:
    limits = d.limiter.limits
    minutes = ratelimit.WINDOW_S // 60
    return {"timezone": "UTC", "serverTime": now_ms(), "futuresType": "U_MARGINED", "rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": minutes, "limit": limits["ip"]},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": minutes, "limit": limits["orders"]}],
        "exchangeFilters": [], "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [binance.symbol_info(i) for i in market.instruments()]}


@router.get("/v1/depth", responses=ok(models.BinanceDepth))
def depth(d: Deps, q: Public) -> Any:
    inst = instrument(q.get("symbol"))
    book = market.depth(d, inst, _limit(q.get("limit"), 500))
    now = now_ms()
    return {"lastUpdateId": book.seq, "E": now, "T": now,
            "bids": [[p, inst.format_qty(n)] for p, n in book.bids], "asks": [[p, inst.format_qty(n)] for p, n in book.asks]}


@router.get("/v1/aggTrades", responses=ok(list[models.BinanceAggTrade]))
def agg_trades(d: Deps, q: Public) -> Any:
    inst = instrument(q.get("symbol"))
    found = market.trades(d, inst, _limit(q.get("limit"), 500), *_window(q))
    return [{"a": t.trade_id, "p": t.price, "q": t.quantity, "f": t.trade_id, "l": t.trade_id, "T": t.ts_ms,
             "m": t.taker_side == "SELL"} for t in found]


@router.get("/v1/trades", responses=ok(list[models.BinanceTrade]))
def recent_trades(d: Deps, q: Public) -> Any:
    inst = instrument(q.get("symbol"))
    return [{"id": t.trade_id, "price": t.price, "qty": t.quantity,
             "quoteQty": format_amount(inst.notional(inst.parse_price(t.price), inst.parse_qty(t.quantity))),
             "time": t.ts_ms, "isBuyerMaker": t.taker_side == "SELL"}
            for t in market.trades(d, inst, _limit(q.get("limit"), 500))]


@router.get("/v1/ticker/24hr", responses=ok(models.BinanceTicker | list[models.BinanceTicker]))
def ticker_24hr(d: Deps, q: Public) -> Any:
    rows = [binance.ticker(i, market.ticker(d, i)) for i in _symbols(q.get("symbol"))]
    return rows[0] if q.get("symbol") is not None else rows


@router.get("/v1/premiumIndex", responses=ok(models.BinancePremium | list[models.BinancePremium]))
def premium_index(d: Deps, q: Public) -> Any:
    rows = [binance.premium(i, market.premium(d, i)) for i in _symbols(q.get("symbol"))]
    return rows[0] if q.get("symbol") is not None else rows


@router.get("/v1/fundingRate", responses=ok(list[models.BinanceFundingRate]))
def funding_rate(d: Deps, q: Public) -> Any:
    """Funding history, oldest first (Binance: startTime/endTime/limit, default 100, at most 1000)."""
    limit = _limit(q.get("limit"), 100, 1000)
    start, end = _window(q)
    rows = [{"symbol": inst.binance_symbol, "fundingTime": r.funding_time_ms, "fundingRate": r.rate,
             "markPrice": r.mark_price} for inst in _symbols(q.get("symbol"))
            for r in market.funding_rounds(d, inst, start, end)]
    return sorted(rows, key=lambda r: r["fundingTime"])[-limit:]


@router.get("/v1/klines", responses=ok(list[models.BinanceKline]))
def klines(d: Deps, q: Public) -> Any:
    return _klines(d, q)


@router.get("/v1/markPriceKlines", responses=ok(list[models.BinanceKline]))
def mark_price_klines(d: Deps, q: Public) -> Any:
    return _klines(d, q, mark_prices=True)


def _klines(d: ApiDeps, q: dict[str, str], mark_prices: bool = False) -> list[list[Any]]:
    inst = instrument(q.get("symbol"))
    interval = q.get("interval") or ""
    rows = market.candles(d, inst, interval, *_window(q), _limit(q.get("limit"), 500, market.MAX_CANDLES), mark_prices)
    return [binance.kline(inst, interval, c) for c in rows]


# --- account (signed) -------------------------------------------------------------------------


def _position_rows(d: ApiDeps, acct: int) -> list[dict[str, Any]]:
    return [binance.position(p, account.adl_quantile(d, p)) for p in account.positions(d, acct, "open")]


def _account_json(d: ApiDeps, acct: int) -> dict[str, Any]:
    valued = account.positions(d, acct, "open")
    assets = [{"asset": t.asset, "walletBalance": format_amount(t.wallet),
               "unrealizedProfit": format_amount(t.unrealized_pnl), "marginBalance": format_amount(t.margin_balance),
               "maintMargin": format_amount(t.maint_margin), "initialMargin": format_amount(t.initial_margin),
               "positionInitialMargin": format_amount(t.position_margin),
               "openOrderInitialMargin": format_amount(t.order_margin),
               "crossWalletBalance": format_amount(t.available), "crossUnPnl": format_amount(0),
               "availableBalance": format_amount(t.available), "maxWithdrawAmount": format_amount(t.available),
               "marginAvailable": True, "updateTime": t.update_ms} for t in account.totals(d, acct, valued)]
    total = assets[0] if assets else {}
    return {"totalInitialMargin": total.get("initialMargin", "0"), "totalMaintMargin": total.get("maintMargin", "0"),
            "totalWalletBalance": total.get("walletBalance", "0"), "totalUnrealizedProfit": total.get("unrealizedProfit", "0"),
            "totalMarginBalance": total.get("marginBalance", "0"), "availableBalance": total.get("availableBalance", "0"),
            "maxWithdrawAmount": total.get("maxWithdrawAmount", "0"), "assets": assets,
            "positions": [binance.position(p, account.adl_quantile(d, p)) for p in valued]}


@router.get("/v3/account", responses=ok(models.BinanceAccount))
@router.get("/v2/account", responses=ok(models.BinanceAccount))
def account_info(d: Deps, caller: Read) -> Any:
    return _account_json(d, caller.user_id)


@router.get("/v2/balance", responses=ok(list[models.BinanceBalance]))
@router.get("/v3/balance", responses=ok(list[models.BinanceBalance]))
def balance(d: Deps, caller: Read) -> Any:
    full = _account_json(d, caller.user_id)
    return [{"accountAlias": "perpline", "asset": a["asset"], "balance": a["walletBalance"],
             "crossWalletBalance": a["crossWalletBalance"], "crossUnPnl": "0", "availableBalance": a["availableBalance"],
             "maxWithdrawAmount": a["maxWithdrawAmount"], "marginAvailable": True, "updateTime": a["updateTime"]}
            for a in full["assets"]]


@router.get("/v3/positionRisk", responses=ok(list[models.BinancePosition]))
@router.get("/v2/positionRisk", responses=ok(list[models.BinancePosition]))
def position_risk(d: Deps, caller: Read) -> Any:
    rows = _position_rows(d, caller.user_id)
    symbol = caller.params.get("symbol")
    if symbol:
        inst = instrument(symbol)
        rows = [r for r in rows if r["symbol"] == inst.binance_symbol]
    return rows


@router.get("/v1/leverageBracket",
            responses=ok(models.BinanceLeverageBracket | list[models.BinanceLeverageBracket]))
def leverage_bracket(caller: Read) -> Any:
    symbol = caller.params.get("symbol")
    rows = [{"symbol": i.binance_symbol, "notionalCoef": "1", "brackets": binance.bracket_rows(i)} for i in _symbols(symbol)]
    return rows[0] if symbol else rows


@router.get("/v1/commissionRate", responses=ok(models.BinanceCommissionRate))
def commission_rate(caller: Read) -> Any:
    inst = instrument(caller.params.get("symbol"))
    return {"symbol": inst.binance_symbol, "makerCommissionRate": format_rate(inst.maker_fee_e8),
            "takerCommissionRate": format_rate(inst.taker_fee_e8)}


@router.post("/v1/leverage", responses=ok(models.BinanceLeverage))
async def set_leverage(request: Request, d: Deps, caller: Trade) -> Any:
    inst = instrument(caller.params.get("symbol"))
    leverage = _int_param(caller.params, "leverage")
    if leverage is None:
        raise PerplineError(Code.MISSING_FIELD, "leverage")
    await orders.set_leverage(d, request, caller.user_id, inst, leverage, new_request_id())
    return {"symbol": inst.binance_symbol, "leverage": leverage, "maxNotionalValue": str(inst.max_notional_at(leverage) // 10**8)}


@router.get("/v1/income", responses=ok(list[models.BinanceIncome]))
def income(d: Deps, caller: Read) -> Any:
    """COMMISSION, REALIZED_PNL and FUNDING_FEE (positive: received), oldest first."""
    symbol = caller.params.get("symbol")
    rows = account.income(d, caller.user_id, caller.params.get("incomeType"), instrument(symbol) if symbol else None,
                          *_window(caller.params))
    return [{"symbol": r.inst.binance_symbol, "incomeType": r.kind, "income": format_amount(r.amount), "asset": r.asset,
             "info": r.kind, "time": r.time_ms, "tranId": r.tran_id, "tradeId": r.trade_id}
            for r in rows[-_limit(caller.params.get("limit"), 100):]]


# --- orders (signed) --------------------------------------------------------------------------


def _terms(p: dict[str, str]) -> orders.OrderTerms:
    """A new order's terms from Binance's parameters, checked as Binance checks them."""
    side, order_type, quantity = p.get("side"), p.get("type"), p.get("quantity")
    if side not in ("BUY", "SELL"):
        raise PerplineError(Code.BAD_SIDE if side else Code.MISSING_FIELD, "side")
    if order_type not in ("LIMIT", "MARKET"):
        raise PerplineError(Code.BAD_ORDER_TYPE if order_type else Code.MISSING_FIELD, "type")
    if not quantity:
        raise PerplineError(Code.MISSING_FIELD, "quantity")
    tif = p.get("timeInForce") or "GTC"
    if tif not in ("GTC", "IOC", "FOK", "GTX") or (order_type == "MARKET" and tif == "GTX"):
        raise PerplineError(Code.BAD_TIME_IN_FORCE, "timeInForce")
    if p.get("positionSide", "BOTH") != "BOTH":
        raise PerplineError(Code.MALFORMED, "positionSide: only one-way mode (BOTH)")
    price = p.get("price") if order_type == "LIMIT" else None
    if order_type == "LIMIT" and not price:
        raise PerplineError(Code.MISSING_FIELD, "price")
    coid = p.get("newClientOrderId") or f"pl-{new_request_id()[:30]}"
    if not CLIENT_ORDER_ID.fullmatch(coid):
        raise PerplineError(Code.MALFORMED, "newClientOrderId")
    return orders.OrderTerms(side, order_type, tif, price, quantity, coid, p.get("reduceOnly", "false").lower() == "true")


@router.post("/v1/order", responses=ok(models.BinanceOrder))
async def new_order(request: Request, d: Deps, caller: Trade) -> Any:
    inst = instrument(caller.params.get("symbol"))
    terms = _terms(caller.params)
    orders.refuse_duplicate_client_order_id(d, caller.user_id, terms.client_order_id)
    placed = await orders.place(d, request, caller.user_id, new_request_id(), inst, terms)
    _raise_matcher_rejection(placed)
    return binance.order(inst, placed.order)


def _raise_matcher_rejection(placed: orders.Placed) -> None:
    """Binance refuses (not expires) a post-only order that would take and an FOK that cannot fill."""
    view, code = placed.order, placed.matcher_code
    if view.status in (REJECTED, EXPIRED) and code == Code.POST_ONLY_WOULD_TAKE:
        raise PerplineError(Code.POST_ONLY_WOULD_TAKE, "post-only order would take")
    if view.status == EXPIRED and code == Code.FOK_NOT_FILLABLE and view.time_in_force == "FOK":
        raise PerplineError(Code.FOK_NOT_FILLABLE, "FOK order could not fill")


def _which(caller: auth.Caller) -> tuple[int | None, str | None]:
    order_id = _int_param(caller.params, "orderId")
    coid = caller.params.get("origClientOrderId")
    if order_id is None and not coid:
        raise PerplineError(Code.MISSING_FIELD, "orderId or origClientOrderId")
    return order_id, coid


@router.get("/v1/order", responses=ok(models.BinanceOrder))
def get_order(d: Deps, caller: Read) -> Any:
    inst = instrument(caller.params.get("symbol"))
    found = orders.find(d, caller.user_id, inst, *_which(caller))
    if found is None:
        code, msg, status = binance.QUERY_UNKNOWN_ORDER
        return JSONResponse({"code": code, "msg": msg}, status_code=status)
    return binance.order(inst, found)


def _open_order(d: ApiDeps, caller: auth.Caller, inst: Instrument) -> m.OrderView:
    try:
        return orders.open_order(d, caller.user_id, inst, *_which(caller))
    except PerplineError as err:
        if err.code != Code.UNKNOWN_ORDER:
            raise
        raise PerplineError(Code.UNKNOWN_ORDER, "Unknown order sent.") from err


@router.delete("/v1/order", responses=ok(models.BinanceOrder))
async def cancel_order(request: Request, d: Deps, caller: Trade) -> Any:
    inst = instrument(caller.params.get("symbol"))
    found = _open_order(d, caller, inst)
    closed = await orders.cancel(d, request, caller.user_id, inst, found.order_id, new_request_id())
    if closed is None:  # never answer the open order it may no longer be
        raise PerplineError(Code.TIMEOUT, "cancel accepted; not confirmed within the API's wait: query the order")
    return binance.order(inst, closed)


@router.put("/v1/order", responses=ok(models.BinanceOrder))
async def modify_order(request: Request, d: Deps, caller: Trade) -> Any:
    """Binance's modify order: new price and total quantity of an open LIMIT order (side must match)."""
    inst = instrument(caller.params.get("symbol"))
    found = _open_order(d, caller, inst)
    quantity, price = caller.params.get("quantity"), caller.params.get("price")
    if not quantity or not price:
        raise PerplineError(Code.MISSING_FIELD, "quantity and price")
    if caller.params.get("side", found.side) != found.side:
        raise PerplineError(Code.BAD_SIDE, "side cannot change")
    return binance.order(inst, await orders.amend(d, request, caller.user_id, inst, found, price, quantity))


@router.delete("/v1/allOpenOrders", responses=ok(models.BinanceCancelAll))
async def cancel_all(request: Request, d: Deps, caller: Trade) -> Any:
    inst = instrument(caller.params.get("symbol"))
    closed = await orders.cancel_all(d, request, caller.user_id, inst, new_request_id())
    if any(order is None for _, order in closed):
        raise PerplineError(Code.TIMEOUT, "cancel-all accepted; not every order confirmed within the API's wait")
    return {"msg": "The operation of cancel all open order is done."}


@router.get("/v1/openOrders", responses=ok(list[models.BinanceOrder]))
def open_orders(d: Deps, caller: Read) -> Any:
    symbol = caller.params.get("symbol")
    found = account.orders(d, caller.user_id, "open", instrument(symbol) if symbol else None)
    return [binance.order(instrument(o.symbol), o) for o in found]


@router.get("/v1/allOrders", responses=ok(list[models.BinanceOrder]))
def all_orders(d: Deps, caller: Read) -> Any:
    inst = instrument(caller.params.get("symbol"))
    from_id = _int_param(caller.params, "orderId")
    found = account.orders(d, caller.user_id, "all", inst, *_window(caller.params), from_id)
    return [binance.order(inst, o) for o in _page(found, from_id, caller.params)]


@router.get("/v1/userTrades", responses=ok(list[models.BinanceUserTrade]))
def user_trades(d: Deps, caller: Read) -> Any:
    inst = instrument(caller.params.get("symbol"))
    from_id = _int_param(caller.params, "fromId")
    fills = account.fills(d, caller.user_id, inst, *_window(caller.params), from_id)
    return [binance.user_trade(inst, f) for f in _page(fills, from_id, caller.params)]


def _page(items: list[T], from_id: int | None, params: dict[str, str]) -> list[T]:
    """Binance's paging of a history: from an id, the oldest `limit` at or after it (so a client pages
    forward with the last id + 1); without one, the newest `limit`."""
    limit = _limit(params.get("limit"), 500)
    return items[:limit] if from_id is not None else items[-limit:]


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
def unknown(path: str) -> Any:
    code, msg, status = binance.NOT_FOUND
    return JSONResponse({"code": code, "msg": f"{msg} /fapi/{path}"[:200]}, status_code=status)
