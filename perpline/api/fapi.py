"""The Binance USD-M compatible subset, /fapi: what ccxt's binanceusdm needs (shared/BINANCE_USDM_SUBSET.md).

Same commands, topics and read models as the native API; only the wire differs: Binance symbols
(BTCUSDT), form-encoded signed requests, Binance error codes. Writes answer once the order has
settled in the read model (the matcher finished with it and the account shows those fills), so a
client reads its own writes.

Market data (klines, markPriceKlines, 24h ticker) comes from the read model's aggregates
(perpline.market.candles); mark, index and funding from the risk process (prices.mark, funding.rounds).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from perpline import config
from perpline.api import auth, binance, errors, ratelimit
from perpline.api.app import ApiDeps
from perpline.api.halts import check_not_halted
from perpline.api.v1 import (
    amend_and_wait,
    band_reference,
    market_bound,
    wait_order_closed,
    wait_orders_closed,
)
from perpline.contracts import messages as m
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.ids import new_request_id
from perpline.contracts.instruments import Instrument, load_catalog
from perpline.contracts.units import format_amount, format_rate, parse_amount, parse_uint
from perpline.market.candles import INTERVALS_MS, DayStats
from perpline.risk import adl, formulas

router = APIRouter(prefix="/fapi", tags=["binance usd-m"], responses=errors.documented(*errors.COMMON_ERRORS))
CLIENT_ORDER_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")  # fullmatch: `$` would take a final newline
MAX_LIMIT = 1000


def _deps(request: Request) -> ApiDeps:
    found: ApiDeps = request.app.state.deps
    return found


def _now_ms() -> int:
    return int(time.time() * 1000)


def _instrument(symbol: str | None) -> Instrument:
    if not symbol:
        raise PerplineError(Code.MISSING_FIELD, "symbol")
    inst = load_catalog().get(symbol)
    if inst is None:
        raise PerplineError(Code.UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}")
    return inst


def _limit(raw: str | None, default: int, maximum: int = MAX_LIMIT) -> int:
    return default if raw is None else parse_uint(raw, what="limit", minimum=1, maximum=maximum)


def _int_param(params: dict[str, str], name: str) -> int | None:
    """An optional integer parameter (absent or empty: None), through the one strict parser."""
    raw = params.get(name)
    return None if raw is None or raw == "" else parse_uint(raw, what=name)


def _signed(permission: str) -> Callable[..., Any]:
    """The caller of a signed route, charged its route's weight (perpline.api.ratelimit: the address
    was charged before the request got here)."""
    async def dependency(request: Request) -> auth.Caller:
        d = _deps(request)
        caller = await auth.signed_caller(request, d.registry, d.guard, permission)
        ratelimit.charge_caller(request, caller.api_key, caller.user_id)
        return caller

    return dependency


def _public(request: Request) -> dict[str, str]:
    return dict(request.query_params)  # a name given twice was refused by the app's middleware


Public = Annotated[dict[str, str], Depends(_public)]
Read = Annotated[auth.Caller, Depends(_signed(auth.READ))]
Trade = Annotated[auth.Caller, Depends(_signed(auth.TRADE))]


def _meta(request: Request, rid: str) -> dict[str, Any]:
    """An account command's trace, cause, time and one-use nonce (every /fapi write is signed: the
    accounts processor refuses its replay on another API replica)."""
    return {"trace_id": request.state.trace_id, "causation_id": rid, "ts_ms": _now_ms(), **auth.one_use(request)}


async def _submit(d: ApiDeps, acct: int, cmd: Any, rid: str, marks: dict[str, float] | None = None) -> m.CommandResult:
    await d.send("account.commands", str(acct), cmd)
    if marks is not None:
        marks["sent"] = time.perf_counter()
    assert d.readmodel is not None
    result = await d.readmodel.wait_result(acct, rid, d.wait_s)
    if result is None:
        raise PerplineError(Code.TIMEOUT, "no decision in time")
    if not result.ok:
        raise PerplineError(Code(result.code), result.msg)
    return result


# --- public market data ---------------------------------------------------------------------


@router.get("/v1/ping")
def ping(_: Public) -> Any:
    return {}


@router.get("/v1/time")
def server_time(_: Public) -> Any:
    return {"serverTime": _now_ms()}


@router.get("/v1/exchangeInfo")
def exchange_info(request: Request, _: Public) -> Any:
    limits = _deps(request).limiter.limits
    minutes = ratelimit.WINDOW_S // 60
    return {"timezone": "UTC", "serverTime": _now_ms(), "futuresType": "U_MARGINED", "rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": minutes, "limit": limits["ip"]},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": minutes, "limit": limits["orders"]}],
        "exchangeFilters": [], "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [binance.symbol_info(i) for i in load_catalog().instruments.values()]}


@router.get("/v1/depth")
def depth(request: Request, q: Public) -> Any:
    inst = _instrument(q.get("symbol"))
    d = _deps(request)
    assert d.readmodel is not None
    seq, bids, asks = d.readmodel.depth_at(inst.symbol, _limit(q.get("limit"), 500))
    now = _now_ms()
    return {"lastUpdateId": seq, "E": now, "T": now,
            "bids": [[p, inst.format_qty(n)] for p, n in bids], "asks": [[p, inst.format_qty(n)] for p, n in asks]}


def _trades(d: ApiDeps, inst: Instrument) -> list[m.Trade]:
    assert d.readmodel is not None
    return d.readmodel.trades(inst.symbol, 10**9)


@router.get("/v1/aggTrades")
def agg_trades(request: Request, q: Public) -> Any:
    inst = _instrument(q.get("symbol"))
    trades = _in_window(_trades(_deps(request), inst), q)
    limit = _limit(q.get("limit"), 500)
    return [{"a": t.trade_id, "p": t.price, "q": t.quantity, "f": t.trade_id, "l": t.trade_id, "T": t.ts_ms,
             "m": t.taker_side == "SELL"} for t in trades[-limit:]]


@router.get("/v1/trades")
def recent_trades(request: Request, q: Public) -> Any:
    inst = _instrument(q.get("symbol"))
    limit = _limit(q.get("limit"), 500)
    return [{"id": t.trade_id, "price": t.price, "qty": t.quantity,
             "quoteQty": format_amount(inst.notional(inst.parse_price(t.price), inst.parse_qty(t.quantity))),
             "time": t.ts_ms, "isBuyerMaker": t.taker_side == "SELL"} for t in _trades(_deps(request), inst)[-limit:]]


def _in_window(trades: list[m.Trade], q: dict[str, str]) -> list[m.Trade]:
    start, end = _int_param(q, "startTime"), _int_param(q, "endTime")
    return [t for t in trades if (start is None or t.ts_ms >= start) and (end is None or t.ts_ms <= end)]


def _last_price_ticks(d: ApiDeps, inst: Instrument) -> int:
    assert d.readmodel is not None
    return d.readmodel.mark_ticks(inst.symbol)


@router.get("/v1/ticker/24hr")
def ticker_24hr(request: Request, q: Public) -> Any:
    d = _deps(request)
    if q.get("symbol") is None:
        return [_ticker(d, i) for i in load_catalog().instruments.values()]
    return _ticker(d, _instrument(q.get("symbol")))


def _ticker(d: ApiDeps, inst: Instrument) -> dict[str, Any]:
    """The rolling 24 hours (perpline.market.candles.RollingDay); without a trade in them, the last price."""
    now = _now_ms()
    assert d.readmodel is not None
    day = d.readmodel.day_stats(inst.symbol, now)
    if day is None:
        last = _last_price_ticks(d, inst)
        day = DayStats(now - 86_400_000, last, last, last, last, 0, 0, 0, 0, -1, -1)
    change = day.last_ticks - day.open_ticks
    pct = (Decimal(change) * 100 / Decimal(day.open_ticks)).quantize(Decimal("0.001")) if day.open_ticks else Decimal("0.000")
    weighted = day.quote_minor // (day.volume_lots * inst.amount_per_tick_lot) if day.volume_lots else day.last_ticks
    return {"symbol": inst.binance_symbol, "priceChange": inst.format_price(change),
            "priceChangePercent": str(pct), "weightedAvgPrice": inst.format_price(weighted),
            "lastPrice": inst.format_price(day.last_ticks), "lastQty": inst.format_qty(day.last_lots),
            "openPrice": inst.format_price(day.open_ticks), "highPrice": inst.format_price(day.high_ticks),
            "lowPrice": inst.format_price(day.low_ticks), "volume": inst.format_qty(day.volume_lots),
            "quoteVolume": format_amount(day.quote_minor), "openTime": day.open_ms, "closeTime": now,
            "firstId": day.first_trade_id, "lastId": day.last_trade_id, "count": day.trades}


@router.get("/v1/premiumIndex")
def premium_index(request: Request, q: Public) -> Any:
    d = _deps(request)
    if q.get("symbol") is None:
        return [_premium(d, i) for i in load_catalog().instruments.values()]
    return _premium(d, _instrument(q.get("symbol")))


def _premium(d: ApiDeps, inst: Instrument) -> dict[str, Any]:
    now = _now_ms()
    assert d.readmodel is not None
    mark = d.readmodel.mark(inst.symbol)
    rounds = d.readmodel.funding_rounds(inst.symbol)
    last_rate = rounds[-1].rate if rounds else "0.00000000"
    interval_ms = config.funding_interval_ms()
    if mark is None:  # no risk process yet: the last price, and the next funding boundary
        price = inst.format_price(_last_price_ticks(d, inst))
        return {"symbol": inst.binance_symbol, "markPrice": price, "indexPrice": price, "estimatedSettlePrice": price,
                "lastFundingRate": last_rate, "interestRate": format_rate(inst.interest_e8),
                "nextFundingTime": (now // interval_ms + 1) * interval_ms, "time": now}
    return {"symbol": inst.binance_symbol, "markPrice": mark.mark_price, "indexPrice": mark.index_price,
            "estimatedSettlePrice": mark.mark_price, "lastFundingRate": last_rate,
            "interestRate": format_rate(inst.interest_e8), "nextFundingTime": mark.next_funding_ms, "time": mark.ts_ms}


@router.get("/v1/fundingRate")
def funding_rate(request: Request, q: Public) -> Any:
    """Funding history, oldest first (Binance: startTime/endTime/limit, default 100, at most 1000)."""
    d = _deps(request)
    assert d.readmodel is not None
    symbols = [_instrument(q.get("symbol"))] if q.get("symbol") else list(load_catalog().instruments.values())
    limit = _limit(q.get("limit"), 100, 1000)
    start, end = _int_param(q, "startTime"), _int_param(q, "endTime")
    rows = [{"symbol": inst.binance_symbol, "fundingTime": r.funding_time_ms, "fundingRate": r.rate,
             "markPrice": r.mark_price} for inst in symbols for r in d.readmodel.funding_rounds(inst.symbol)
            if (start is None or r.funding_time_ms >= start) and (end is None or r.funding_time_ms <= end)]
    return sorted(rows, key=lambda r: r["fundingTime"])[-limit:]


@router.get("/v1/klines")
def klines(request: Request, q: Public) -> Any:
    return _klines(_deps(request), q)


@router.get("/v1/markPriceKlines")
def mark_price_klines(request: Request, q: Public) -> Any:
    return _klines(_deps(request), q, mark=True)


def _klines(d: ApiDeps, q: dict[str, str], mark: bool = False) -> list[list[Any]]:
    """Candles of the trades (or of the risk process's mark prices) the read model aggregated as they
    streamed (perpline.market.candles: the last 1,500 of each interval), oldest first."""
    inst = _instrument(q.get("symbol"))
    interval = q.get("interval") or ""
    if interval not in INTERVALS_MS:
        raise PerplineError(Code.MALFORMED, "interval")
    limit = _limit(q.get("limit"), 500, 1500)
    assert d.readmodel is not None
    rows = d.readmodel.candles(inst.symbol, interval, _int_param(q, "startTime"), _int_param(q, "endTime"), limit, mark)
    step = INTERVALS_MS[interval]
    return [[c.open_ms, inst.format_price(c.open_ticks), inst.format_price(c.high_ticks), inst.format_price(c.low_ticks),
             inst.format_price(c.close_ticks), inst.format_qty(c.volume_lots), c.open_ms + step - 1,
             format_amount(c.quote_minor), c.trades, inst.format_qty(c.taker_buy_lots),
             format_amount(c.taker_buy_quote_minor), "0"] for c in rows]


# --- account (signed) -------------------------------------------------------------------------


def _position_rows(d: ApiDeps, acct: int) -> list[dict[str, Any]]:
    assert d.readmodel is not None
    view = d.readmodel.snapshot_account(acct)
    rows = []
    for pos in view.positions.values():
        inst = load_catalog().get(pos.symbol)
        if inst is None or parse_amount(pos.size, allow_negative=True) == 0:
            continue
        order_margin = sum(parse_amount(o.margin) for o in view.open_orders.values() if o.symbol == inst.symbol)
        rows.append(_position_row(d, inst, pos, order_margin))
    return rows


def _position_row(d: ApiDeps, inst: Instrument, pos: m.PositionChanged, order_margin: int) -> dict[str, Any]:
    """One position valued with the risk formulas (perpline.risk.formulas, as v1 and the audit): at the
    mark, else the last price; before any price, at its entry (no PnL)."""
    size_lots = inst.parse_signed_qty(pos.size)
    cost, margin = parse_amount(pos.cost), parse_amount(pos.margin)
    mark_ticks = _last_price_ticks(d, inst)
    pnl = formulas.unrealized_pnl(inst, size_lots, cost, mark_ticks) if mark_ticks else 0
    mark_ticks = mark_ticks or inst.parse_price(pos.entry_price)
    notional = inst.notional(mark_ticks, abs(size_lots)) * (1 if size_lots > 0 else -1)
    maint = formulas.maint_margin(inst, size_lots, cost, mark_ticks)
    liq_ticks = formulas.liquidation_ticks(inst, size_lots, cost, margin)
    return {"symbol": inst.binance_symbol, "positionSide": "BOTH", "positionAmt": pos.size, "entryPrice": pos.entry_price,
            "breakEvenPrice": pos.entry_price, "markPrice": inst.format_price(mark_ticks),
            "unRealizedProfit": format_amount(pnl), "liquidationPrice": inst.format_price(liq_ticks),
            "isolatedMargin": pos.margin, "notional": format_amount(notional), "marginAsset": inst.margin_asset,
            "isolatedWallet": pos.margin, "initialMargin": format_amount(margin + order_margin),
            "maintMargin": format_amount(maint), "positionInitialMargin": pos.margin,
            "openOrderInitialMargin": format_amount(order_margin), "adl": _adl_quantile(d, inst, pos),
            "bidNotional": "0", "askNotional": "0", "leverage": str(pos.leverage), "marginType": "isolated",
            "updateTime": pos.ts_ms}


def _adl_quantile(d: ApiDeps, inst: Instrument, pos: m.PositionChanged) -> int:
    """The position's ADL indicator among the positions on its side (perpline.risk.adl: the ranking
    auto-deleveraging uses), at the mark."""
    assert d.readmodel is not None
    mark = _last_price_ticks(d, inst)
    if not mark:
        return 0

    def score_of(p: m.PositionChanged) -> Fraction:
        return adl.score(inst, inst.parse_signed_qty(p.size), parse_amount(p.cost), parse_amount(p.margin), mark)

    long = not pos.size.startswith("-")
    side = [score_of(p) for p in d.readmodel.open_positions(inst.symbol) if (not p.size.startswith("-")) == long]
    return adl.quantile(score_of(pos), side)


@router.get("/v3/account")
@router.get("/v2/account")
def account(request: Request, caller: Read) -> Any:
    d = _deps(request)
    assert d.readmodel is not None
    view = d.readmodel.snapshot_account(caller.user_id)
    positions = _position_rows(d, caller.user_id)
    now = _now_ms()
    assets = []
    for asset in load_catalog().assets:
        bal = view.balances.get(asset)
        wallet = parse_amount(bal.wallet) if bal else 0
        available = parse_amount(bal.available) if bal else 0
        initial = (parse_amount(bal.order_margin) + parse_amount(bal.position_margin)) if bal else 0
        unrealized = sum(parse_amount(p["unRealizedProfit"], allow_negative=True) for p in positions)
        maint = sum(parse_amount(p["maintMargin"]) for p in positions)
        assets.append({"asset": asset, "walletBalance": format_amount(wallet),
                       "unrealizedProfit": format_amount(unrealized), "marginBalance": format_amount(wallet + unrealized),
                       "maintMargin": format_amount(maint), "initialMargin": format_amount(initial),
                       "positionInitialMargin": bal.position_margin if bal else format_amount(0),
                       "openOrderInitialMargin": bal.order_margin if bal else format_amount(0),
                       "crossWalletBalance": format_amount(available), "crossUnPnl": format_amount(0),
                       "availableBalance": format_amount(available), "maxWithdrawAmount": format_amount(available),
                       "marginAvailable": True, "updateTime": bal.ts_ms if bal else now})
    total = assets[0] if assets else {}
    return {"totalInitialMargin": total.get("initialMargin", "0"), "totalMaintMargin": total.get("maintMargin", "0"),
            "totalWalletBalance": total.get("walletBalance", "0"), "totalUnrealizedProfit": total.get("unrealizedProfit", "0"),
            "totalMarginBalance": total.get("marginBalance", "0"), "availableBalance": total.get("availableBalance", "0"),
            "maxWithdrawAmount": total.get("maxWithdrawAmount", "0"), "assets": assets, "positions": positions}


@router.get("/v2/balance")
@router.get("/v3/balance")
def balance(request: Request, caller: Read) -> Any:
    full = account(request, caller)
    return [{"accountAlias": "perpline", "asset": a["asset"], "balance": a["walletBalance"],
             "crossWalletBalance": a["crossWalletBalance"], "crossUnPnl": "0", "availableBalance": a["availableBalance"],
             "maxWithdrawAmount": a["maxWithdrawAmount"], "marginAvailable": True, "updateTime": a["updateTime"]}
            for a in full["assets"]]


@router.get("/v3/positionRisk")
@router.get("/v2/positionRisk")
def position_risk(request: Request, caller: Read) -> Any:
    rows = _position_rows(_deps(request), caller.user_id)
    symbol = caller.params.get("symbol")
    if symbol:
        inst = _instrument(symbol)
        rows = [r for r in rows if r["symbol"] == inst.binance_symbol]
    return rows


@router.get("/v1/leverageBracket")
def leverage_bracket(caller: Read) -> Any:
    symbol = caller.params.get("symbol")
    insts = [_instrument(symbol)] if symbol else list(load_catalog().instruments.values())
    rows = [{"symbol": i.binance_symbol, "notionalCoef": "1", "brackets": binance.bracket_rows(i)} for i in insts]
    return rows[0] if symbol else rows


@router.get("/v1/commissionRate")
def commission_rate(caller: Read) -> Any:
    inst = _instrument(caller.params.get("symbol"))
    return {"symbol": inst.binance_symbol, "makerCommissionRate": format_rate(inst.maker_fee_e8),
            "takerCommissionRate": format_rate(inst.taker_fee_e8)}


@router.post("/v1/leverage")
async def set_leverage(request: Request, caller: Trade) -> Any:
    d = _deps(request)
    inst = _instrument(caller.params.get("symbol"))
    leverage = _int_param(caller.params, "leverage")
    if leverage is None:
        raise PerplineError(Code.MISSING_FIELD, "leverage")
    rid = new_request_id()
    cmd = m.SetLeverage(**_meta(request, rid), request_id=rid, account_id=caller.user_id, symbol=inst.symbol,
                        leverage=leverage)
    await _submit(d, caller.user_id, cmd, rid)
    cap = inst.max_notional_at(leverage)
    return {"symbol": inst.binance_symbol, "leverage": leverage, "maxNotionalValue": str(cap // 10**8)}


@router.get("/v1/income")
def income(request: Request, caller: Read) -> Any:
    """COMMISSION and REALIZED_PNL from the account's fills, FUNDING_FEE from its funding payments
    (positive: received), oldest first."""
    d = _deps(request)
    assert d.readmodel is not None
    kind = caller.params.get("incomeType")
    symbol = caller.params.get("symbol")
    inst_filter = _instrument(symbol) if symbol else None
    view = d.readmodel.snapshot_account(caller.user_id)
    rows = [*_fill_income(view.fills), *_funding_income(view.funding)]
    rows = [r for r in rows if (kind is None or r["incomeType"] == kind)
            and (inst_filter is None or r["symbol"] == inst_filter.binance_symbol)]
    start, end = _int_param(caller.params, "startTime"), _int_param(caller.params, "endTime")
    rows = [r for r in rows if (start is None or r["time"] >= start) and (end is None or r["time"] <= end)]
    rows.sort(key=lambda r: (r["time"], r["tranId"]))
    return rows[-_limit(caller.params.get("limit"), 100):]


def _fill_income(fills: Iterable[m.FillRecorded]) -> list[dict[str, Any]]:
    rows = []
    for f in fills:
        inst = load_catalog().get(f.symbol)
        if inst is None:
            continue
        for income_type, amount in (("COMMISSION", format_amount(-parse_amount(f.fee))),
                                    ("REALIZED_PNL", f.realized_pnl)):
            if parse_amount(amount, allow_negative=True) != 0:
                rows.append({"symbol": inst.binance_symbol, "incomeType": income_type, "income": amount,
                             "asset": f.fee_asset, "info": income_type, "time": f.ts_ms,
                             "tranId": f.trade_id * 10 + (1 if income_type == "COMMISSION" else 2),
                             "tradeId": str(f.trade_id)})
    return rows


def _funding_income(payments: Iterable[m.FundingApplied]) -> list[dict[str, Any]]:
    """A funding payment's `amount` is what the account paid; Binance's income is what it received."""
    rows = []
    for p in payments:
        inst = load_catalog().get(p.symbol)
        if inst is not None and parse_amount(p.amount, allow_negative=True) != 0:
            rows.append({"symbol": inst.binance_symbol, "incomeType": "FUNDING_FEE",
                         "income": format_amount(-parse_amount(p.amount, allow_negative=True)), "asset": p.asset,
                         "info": "FUNDING_FEE", "time": p.funding_time_ms, "tranId": p.funding_time_ms * 10 + 3,
                         "tradeId": ""})
    return rows


# --- orders (signed) --------------------------------------------------------------------------


@router.post("/v1/order")
async def new_order(request: Request, caller: Trade
                    ) -> Any:
    d = _deps(request)
    assert d.readmodel is not None
    p = caller.params
    inst = _instrument(p.get("symbol"))
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
    if d.readmodel.find_client_order(caller.user_id, coid) is not None:
        raise PerplineError(Code.DUPLICATE_CLIENT_ORDER_ID, coid)
    reduce_only = p.get("reduceOnly", "false").lower() == "true"
    check_not_halted(d, inst.symbol)
    rid = new_request_id()
    fields: dict[str, Any] = {"side": side, "order_type": order_type, "time_in_force": tif}  # checked above
    cmd = m.PlaceOrder(**_meta(request, rid), **fields, request_id=rid, account_id=caller.user_id, symbol=inst.symbol,
                       price=price, quantity=quantity, client_order_id=coid, reduce_only=reduce_only,
                       price_bound=market_bound(d, inst, order_type, side), band_reference=band_reference(d, inst))
    started, marks = time.perf_counter(), {}
    try:
        result = await _submit(d, caller.user_id, cmd, rid, marks)
    except PerplineError as err:
        raise _with_instrument(err, inst) from err
    decided = time.perf_counter()
    assert result.order_id is not None
    settled = await d.readmodel.wait_settled(caller.user_id, result.order_id, d.wait_s)
    request.state.stages = stages_header(request, started, marks["sent"], decided, time.perf_counter())
    view = d.readmodel.find_order(caller.user_id, result.order_id)
    if view is None or not settled:  # never answer a status the order may not end in: Binance's "unknown"
        raise PerplineError(Code.TIMEOUT, UNSETTLED)
    _raise_matcher_rejection(d, view)
    return binance.order(inst, view)


UNSETTLED = ("order accepted; its outcome is not settled within the API's wait: query it by its client order "
             "id (GET /fapi/v1/order)")


def stages_header(request: Request, started: float, sent: float, decided: float, settled: float) -> str:
    """Where an order's answer time went (X-Stage-Ms, in ms): `api` from the request's arrival to the
    command's publication (auth, parsing, checks), `broker` until the broker acknowledged the command,
    `accounts` until the accounts processor's decision was in the read model, `settled` until the
    matcher's outcome and every fill were in the account views."""
    arrived = getattr(request.state, "arrived", started)
    return (f"api={(started - arrived) * 1000:.2f};broker={(sent - started) * 1000:.2f};"
            f"accounts={(decided - sent) * 1000:.2f};settled={(settled - decided) * 1000:.2f}")


def _with_instrument(err: PerplineError, inst: Instrument) -> PerplineError:
    err.instrument = inst  # type: ignore[attr-defined]
    return err


def _raise_matcher_rejection(d: ApiDeps, view: m.OrderView) -> None:
    """Binance refuses (not expires) a post-only order that would take and an FOK that cannot fill."""
    assert d.readmodel is not None
    code = d.readmodel.matcher_code(view.order_id)
    if view.status in ("REJECTED", "EXPIRED") and code == Code.POST_ONLY_WOULD_TAKE:
        raise PerplineError(Code.POST_ONLY_WOULD_TAKE, "post-only order would take")
    if view.status == "EXPIRED" and code == Code.FOK_NOT_FILLABLE and view.time_in_force == "FOK":
        raise PerplineError(Code.FOK_NOT_FILLABLE, "FOK order could not fill")


def _find(d: ApiDeps, caller: auth.Caller, inst: Instrument) -> m.OrderView | None:
    assert d.readmodel is not None
    order_id = _int_param(caller.params, "orderId")
    coid = caller.params.get("origClientOrderId")
    if order_id is None and not coid:
        raise PerplineError(Code.MISSING_FIELD, "orderId or origClientOrderId")
    if order_id is not None:
        found = d.readmodel.find_order(caller.user_id, order_id)
    else:
        found = d.readmodel.find_client_order(caller.user_id, coid or "")
    return found if found is not None and found.symbol == inst.symbol else None


@router.get("/v1/order")
def get_order(request: Request, caller: Read) -> Any:
    inst = _instrument(caller.params.get("symbol"))
    found = _find(_deps(request), caller, inst)
    if found is None:
        status, body = binance.QUERY_UNKNOWN_ORDER[2], {"code": binance.QUERY_UNKNOWN_ORDER[0],
                                                         "msg": binance.QUERY_UNKNOWN_ORDER[1]}
        return JSONResponse(body, status_code=status)
    return binance.order(inst, found)


@router.delete("/v1/order")
async def cancel_order(request: Request, caller: Trade) -> Any:
    d = _deps(request)
    inst = _instrument(caller.params.get("symbol"))
    found = _find(d, caller, inst)
    if found is None or found.status not in ("NEW", "PARTIALLY_FILLED"):
        raise PerplineError(Code.UNKNOWN_ORDER, "Unknown order sent.")
    rid = new_request_id()
    cmd = m.CancelOrder(**_meta(request, rid), request_id=rid, account_id=caller.user_id, symbol=inst.symbol,
                        order_id=found.order_id)
    await _submit(d, caller.user_id, cmd, rid)
    closed = await wait_order_closed(d, caller.user_id, found.order_id)
    if closed is None:  # never answer the open order it may no longer be
        raise PerplineError(Code.TIMEOUT, "cancel accepted; not confirmed within the API's wait: query the order")
    return binance.order(inst, closed)


@router.put("/v1/order")
async def modify_order(request: Request, caller: Trade) -> Any:
    """Binance's modify order: new price and total quantity of an open LIMIT order (side must match)."""
    d = _deps(request)
    inst = _instrument(caller.params.get("symbol"))
    found = _find(d, caller, inst)
    if found is None or found.status not in ("NEW", "PARTIALLY_FILLED"):
        raise PerplineError(Code.UNKNOWN_ORDER, "Unknown order sent.")
    quantity, price = caller.params.get("quantity"), caller.params.get("price")
    if not quantity or not price:
        raise PerplineError(Code.MISSING_FIELD, "quantity and price")
    if caller.params.get("side", found.side) != found.side:
        raise PerplineError(Code.BAD_SIDE, "side cannot change")
    return binance.order(inst, await amend_and_wait(d, request, caller.user_id, inst, found, price, quantity))


@router.delete("/v1/allOpenOrders")
async def cancel_all(request: Request, caller: Trade) -> Any:
    d = _deps(request)
    inst = _instrument(caller.params.get("symbol"))
    rid = new_request_id()
    cmd = m.CancelAll(**_meta(request, rid), request_id=rid, account_id=caller.user_id, symbol=inst.symbol)
    result = await _submit(d, caller.user_id, cmd, rid)
    closed = await wait_orders_closed(d, caller.user_id, list(result.order_ids))
    if any(order is None for order in closed):
        raise PerplineError(Code.TIMEOUT, "cancel-all accepted; not every order confirmed within the API's wait")
    return {"msg": "The operation of cancel all open order is done."}


@router.get("/v1/openOrders")
def open_orders(request: Request, caller: Read) -> Any:
    d = _deps(request)
    assert d.readmodel is not None
    symbol = caller.params.get("symbol")
    inst_filter = _instrument(symbol) if symbol else None
    view = d.readmodel.snapshot_account(caller.user_id)
    out = []
    for order in sorted(view.open_orders.values(), key=lambda o: o.order_id):
        inst = load_catalog().get(order.symbol)
        if inst is not None and (inst_filter is None or inst.symbol == inst_filter.symbol):
            out.append(binance.order(inst, order))
    return out


@router.get("/v1/allOrders")
def all_orders(request: Request, caller: Read) -> Any:
    d = _deps(request)
    assert d.readmodel is not None
    inst = _instrument(caller.params.get("symbol"))
    view = d.readmodel.snapshot_account(caller.user_id)
    orders = [o for o in [*view.open_orders.values(), *view.closed_orders.values()] if o.symbol == inst.symbol]
    orders.sort(key=lambda o: o.order_id)
    start, end = _int_param(caller.params, "startTime"), _int_param(caller.params, "endTime")
    from_id = _int_param(caller.params, "orderId")
    orders = [o for o in orders if (start is None or o.created_ms >= start) and (end is None or o.created_ms <= end)
              and (from_id is None or o.order_id >= from_id)]
    return [binance.order(inst, o) for o in orders[-_limit(caller.params.get("limit"), 500):]]


@router.get("/v1/userTrades")
def user_trades(request: Request, caller: Read) -> Any:
    d = _deps(request)
    assert d.readmodel is not None
    inst = _instrument(caller.params.get("symbol"))
    fills = [f for f in d.readmodel.snapshot_account(caller.user_id).fills if f.symbol == inst.symbol]
    start, end = _int_param(caller.params, "startTime"), _int_param(caller.params, "endTime")
    from_id = _int_param(caller.params, "fromId")
    fills = [f for f in fills if (start is None or f.ts_ms >= start) and (end is None or f.ts_ms <= end)
             and (from_id is None or f.trade_id >= from_id)]
    return [binance.user_trade(inst, f) for f in fills[-_limit(caller.params.get("limit"), 500):]]


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
def unknown(path: str) -> Any:
    code, msg, status = binance.NOT_FOUND
    return JSONResponse({"code": code, "msg": f"{msg} /fapi/{path}"[:200]}, status_code=status)
