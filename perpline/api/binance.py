"""The Binance USD-M wire: error codes and messages, and the shapes ccxt's binanceusdm reads.

One table maps our result codes to Binance's (code, message, HTTP status); the messages are
Binance's own wording because ccxt matches some of them exactly (shared/BINANCE_USDM_SUBSET.md).
"""

from __future__ import annotations

from typing import Any

from perpline.api.service import account, market
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.contracts.instruments import Instrument
from perpline.contracts.units import (
    RATE_SCALE,
    div_ceil,
    format_amount,
    format_fixed,
    format_rate,
    parse_amount,
)
from perpline.market.candles import INTERVALS_MS, Candle

_ERRORS: dict[Code, tuple[int, str, int]] = {
    Code.BAD_NUMBER: (-1100, "Illegal characters found in a parameter.", 400),
    Code.NEGATIVE_NUMBER: (-1100, "Illegal characters found in a parameter.", 400),
    Code.TOO_PRECISE: (-1111, "Precision is over the maximum defined for this asset.", 400),
    Code.NUMBER_TOO_LARGE: (-1100, "Illegal characters found in a parameter.", 400),
    Code.NOT_POSITIVE: (-4003, "Quantity less than or equal to zero.", 400),
    Code.UNKNOWN_SYMBOL: (-1121, "Invalid symbol.", 400),
    Code.PRICE_NOT_ON_TICK: (-4014, "Price not increased by tick size.", 400),
    Code.QTY_NOT_ON_LOT: (-4023, "Quantity not increased by step size.", 400),
    Code.QTY_TOO_SMALL: (-4004, "Quantity less than minimum quantity.", 400),
    Code.QTY_TOO_LARGE: (-4005, "Quantity greater than maximum quantity.", 400),
    Code.NOTIONAL_TOO_SMALL: (-4164, "Order's notional must be no smaller than {min_notional} (unless you choose "
                                     "reduce only).", 400),
    Code.BAD_SIDE: (-1117, "Invalid side.", 400),
    Code.PRICE_OUT_OF_BAND: (-4016, "Limit price is outside the allowed band (PERCENT_PRICE).", 400),
    Code.BAD_ORDER_TYPE: (-1116, "Invalid orderType.", 400),
    Code.BAD_TIME_IN_FORCE: (-1115, "Invalid timeInForce.", 400),
    Code.MALFORMED: (-1102, "A mandatory parameter was not sent, was empty/null, or malformed.", 400),
    Code.DUPLICATE_PARAMETER: (-1101, "Duplicate values for a parameter detected.", 400),
    Code.MISSING_FIELD: (-1102, "A mandatory parameter was not sent, was empty/null, or malformed.", 400),
    Code.UNKNOWN_ASSET: (-4007, "Invalid asset.", 400),
    Code.BAD_LEVERAGE: (-4028, "Leverage is not valid", 400),
    Code.INSUFFICIENT_BALANCE: (-2019, "Margin is insufficient.", 400),
    Code.UNKNOWN_ORDER: (-2011, "Unknown order sent.", 400),
    Code.DUPLICATE_CLIENT_ORDER_ID: (-4116, "ClientOrderId is duplicated.", 400),
    Code.TOO_MANY_OPEN_ORDERS: (-2025, "Reach max open order limit.", 400),
    Code.REDUCE_ONLY_REJECTED: (-2022, "ReduceOnly Order is rejected.", 400),
    Code.LEVERAGE_TOO_LOW_FOR_POSITION: (-4161, "Leverage reduction is not supported in Isolated Margin Mode with "
                                                "open positions.", 400),
    Code.SYMBOL_HALTED: (-1122, "Invalid symbol status: trading is halted.", 400),
    Code.POSITION_CAP_EXCEEDED: (-2027, "Exceeded the maximum allowable position at current leverage.", 400),
    Code.POST_ONLY_WOULD_TAKE: (-5022, "Due to the order could not be executed as maker, the Post Only order "
                                               "will be rejected.", 400),
    Code.FOK_NOT_FILLABLE: (-5021, "Due to the order could not be filled immediately, the FOK order has "
                                           "been rejected.", 400),
    Code.NO_LIQUIDITY: (-2010, "Order would immediately trigger: no liquidity on the opposite side.", 400),
    Code.TIMEOUT: (-1007, "Timeout waiting for response from backend server. Send status unknown; execution status "
                          "unknown.", 503),
    Code.BROKER_UNAVAILABLE: (-1001, "Internal error; unable to process your request. Please try again.", 503),
    Code.CLICKHOUSE_UNAVAILABLE: (-1001, "Internal error; unable to process your request. Please try again.", 503),
    Code.INTERNAL: (-1000, "An unknown error occurred while processing the request.", 500),
    Code.UNAUTHORIZED: (-2014, "API-key format invalid.", 401),
    Code.BAD_API_KEY: (-2015, "Invalid API-key, IP, or permissions for action.", 401),
    Code.FORBIDDEN: (-2015, "Invalid API-key, IP, or permissions for action.", 401),
    Code.BAD_SIGNATURE: (-1022, "Signature for this request is not valid.", 400),
    Code.REPLAYED_REQUEST: (-1022, "Signature for this request is not valid: it was already used.", 400),
    Code.STALE_REQUEST: (-1021, "Timestamp for this request is outside of the recvWindow.", 400),
    Code.RATE_LIMITED: (-1003, "Too many requests; please use the websocket for live updates.", 429),
    Code.REQUEST_TOO_LARGE: (-1100, "Illegal characters found in a parameter.", 400),
    Code.UNKNOWN_LISTEN_KEY: (-1125, "This listenKey does not exist.", 400),
}
QUERY_UNKNOWN_ORDER = (-2013, "Order does not exist.", 400)
NOT_FOUND = (-1000, "Unknown endpoint.", 404)


def error(code: int, detail: str, inst: Instrument | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, {"code", "msg"}) in Binance's terms for one of our codes."""
    try:
        ours = Code(code)
    except ValueError:
        ours = Code.INTERNAL
    binance_code, msg, status = _ERRORS.get(ours, (-1000, "An unknown error occurred while processing the request.",
                                                   400 if code < 5000 else 500))
    if "{min_notional}" in msg:
        msg = msg.format(min_notional=format_amount(inst.min_notional).rstrip("0").rstrip(".") if inst else "100")
    if ours in (Code.MALFORMED, Code.MISSING_FIELD, Code.BAD_NUMBER, Code.DUPLICATE_PARAMETER) and detail:
        msg = f"{msg} ({detail})"
    return status, {"code": binance_code, "msg": msg}


# --- shapes -----------------------------------------------------------------------------------


def symbol_info(i: Instrument) -> dict[str, Any]:
    return {
        "symbol": i.binance_symbol, "pair": i.binance_symbol, "contractType": "PERPETUAL", "status": "TRADING",
        "baseAsset": i.base_asset, "quoteAsset": i.quote_asset, "marginAsset": i.margin_asset,
        "pricePrecision": i.price_decimals, "quantityPrecision": i.qty_decimals,
        "baseAssetPrecision": 8, "quotePrecision": 8, "onboardDate": 1569398400000,
        "underlyingType": "COIN", "triggerProtect": "0.0500", "liquidationFee": "0.012500",
        "marketTakeBound": "0.05", **_margin_percents(i),
        "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
        "filters": [
            {"filterType": "PRICE_FILTER", "tickSize": i.tick_size, "minPrice": i.tick_size,
             "maxPrice": i.format_price(10**12 // max(i.tick_units, 1))},
            {"filterType": "LOT_SIZE", "stepSize": i.lot_size, "minQty": i.format_qty(i.min_qty_lots),
             "maxQty": i.format_qty(i.max_qty_lots)},
            {"filterType": "MARKET_LOT_SIZE", "stepSize": i.lot_size, "minQty": i.format_qty(i.min_qty_lots),
             "maxQty": i.format_qty(i.market_max_qty_lots)},
            {"filterType": "MAX_NUM_ORDERS", "limit": i.max_open_orders},
            {"filterType": "MIN_NOTIONAL", "notional": format_amount(i.min_notional)},
            {"filterType": "PERCENT_PRICE", "multiplierDecimal": "4",  # the band of Instrument.band_ticks,
             "multiplierUp": format_fixed((RATE_SCALE + i.price_band_e8) // 10**4, 4),  # rounded inwards
             "multiplierDown": format_fixed(div_ceil(RATE_SCALE - i.price_band_e8, 10**4), 4)},
        ],
    }


def _margin_percents(i: Instrument) -> dict[str, str]:
    """exchangeInfo's maintMarginPercent and requiredMarginPercent: the first leverage bracket's
    maintenance rate and initial margin (1 / its max leverage, rounded up), in percent with 4 decimals."""
    first = i.brackets[0]
    return {"maintMarginPercent": format_fixed(first.maint_margin_e8 // 100, 4),
            "requiredMarginPercent": format_fixed(div_ceil(RATE_SCALE, first.max_leverage) // 100, 4)}


def order(i: Instrument, o: m.OrderView) -> dict[str, Any]:
    executed = o.filled
    return {
        "orderId": o.order_id, "symbol": i.binance_symbol, "status": o.status, "clientOrderId": o.client_order_id,
        "price": o.price if o.order_type == "LIMIT" and o.price else "0", "avgPrice": o.avg_price,
        "origQty": o.quantity, "executedQty": executed, "cumQty": executed, "cumQuote": o.cum_quote,
        "timeInForce": o.time_in_force, "type": o.order_type, "origType": o.order_type, "reduceOnly": o.reduce_only,
        "closePosition": False, "side": o.side, "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
        "priceProtect": False, "priceMatch": "NONE", "selfTradePreventionMode": "NONE", "goodTillDate": 0,
        "time": o.created_ms, "updateTime": o.updated_ms,
    }


def user_trade(i: Instrument, f: m.FillRecorded) -> dict[str, Any]:
    quote = i.notional(i.parse_price(f.price), i.parse_qty(f.quantity))
    return {
        "symbol": i.binance_symbol, "id": f.trade_id, "orderId": f.order_id, "side": f.side, "price": f.price,
        "qty": f.quantity, "quoteQty": format_amount(quote), "commission": f.fee, "commissionAsset": f.fee_asset,
        "realizedPnl": f.realized_pnl, "time": f.ts_ms, "maker": f.liquidity == "MAKER", "buyer": f.side == "BUY",
        "positionSide": "BOTH",
    }


def bracket_rows(i: Instrument) -> list[dict[str, Any]]:
    rows = []
    floor = 0
    for n, b in enumerate(i.brackets, start=1):
        rows.append({"bracket": n, "initialLeverage": b.max_leverage, "notionalCap": int(b.notional_cap // 10**8),
                     "notionalFloor": int(floor // 10**8), "maintMarginRatio": format_rate(b.maint_margin_e8),
                     "cum": format_amount(b.maint_amount)})
        floor = b.notional_cap
    return rows


def ticker(inst: Instrument, t: market.Ticker) -> dict[str, Any]:
    day = t.day
    return {"symbol": inst.binance_symbol, "priceChange": inst.format_price(t.change_ticks),
            "priceChangePercent": t.change_percent, "weightedAvgPrice": inst.format_price(t.weighted_ticks),
            "lastPrice": inst.format_price(day.last_ticks), "lastQty": inst.format_qty(day.last_lots),
            "openPrice": inst.format_price(day.open_ticks), "highPrice": inst.format_price(day.high_ticks),
            "lowPrice": inst.format_price(day.low_ticks), "volume": inst.format_qty(day.volume_lots),
            "quoteVolume": format_amount(day.quote_minor), "openTime": day.open_ms, "closeTime": t.close_ms,
            "firstId": day.first_trade_id, "lastId": day.last_trade_id, "count": day.trades}


def premium(inst: Instrument, p: market.Premium) -> dict[str, Any]:
    return {"symbol": inst.binance_symbol, "markPrice": p.mark_price, "indexPrice": p.index_price,
            "estimatedSettlePrice": p.mark_price, "lastFundingRate": p.last_funding_rate,
            "interestRate": format_rate(p.interest_e8), "nextFundingTime": p.next_funding_ms, "time": p.time_ms}


def kline(inst: Instrument, interval: str, c: Candle) -> list[Any]:
    """One candle in Binance's array form (open time, OHLC, volume, close time, quote volume, trades,
    taker buy volume and quote volume, "0")."""
    return [c.open_ms, inst.format_price(c.open_ticks), inst.format_price(c.high_ticks), inst.format_price(c.low_ticks),
            inst.format_price(c.close_ticks), inst.format_qty(c.volume_lots), c.open_ms + INTERVALS_MS[interval] - 1,
            format_amount(c.quote_minor), c.trades, inst.format_qty(c.taker_buy_lots),
            format_amount(c.taker_buy_quote_minor), "0"]


def position(p: account.PositionValue, adl_quantile: int = 0) -> dict[str, Any]:
    """One position valued with the risk formulas (perpline.api.service.account: as v1 and the audit)."""
    inst, pos = p.inst, p.pos
    return {"symbol": inst.binance_symbol, "positionSide": "BOTH", "positionAmt": pos.size, "entryPrice": pos.entry_price,
            "breakEvenPrice": pos.entry_price, "markPrice": inst.format_price(p.priced_ticks),
            "unRealizedProfit": format_amount(p.unrealized_pnl), "liquidationPrice": inst.format_price(p.liquidation_ticks),
            "isolatedMargin": pos.margin, "notional": format_amount(p.notional), "marginAsset": inst.margin_asset,
            "isolatedWallet": pos.margin, "initialMargin": format_amount(parse_amount(pos.margin) + p.order_margin),
            "maintMargin": format_amount(p.maint_margin), "positionInitialMargin": pos.margin,
            "openOrderInitialMargin": format_amount(p.order_margin), "adl": adl_quantile,
            "bidNotional": "0", "askNotional": "0", "leverage": str(pos.leverage), "marginType": "isolated",
            "updateTime": pos.ts_ms}
