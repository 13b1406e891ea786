"""Native market data that /fapi also serves: candles and the 24h ticker, computed once (in fapi.py,
from the trades the read model streamed) and rendered here in the native shape."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from perpline.accounts import margin as mg
from perpline.api import errors, fapi
from perpline.api.v1 import STRICT_UINT
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.units import format_amount, parse_amount

router = APIRouter(prefix="/api/v1/market", tags=["market"], responses=errors.documented(*errors.COMMON_ERRORS))
INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d")


@router.get("/candles")
def candles(request: Request, symbol: str, interval: str = Query("1m", pattern="^(1m|5m|15m|1h|4h|1d)$"),
            limit: Annotated[int, Query(ge=1, le=1500), STRICT_UINT] = 500, start_ms: Annotated[int | None, Query(ge=0), STRICT_UINT] = None,
            end_ms: Annotated[int | None, Query(ge=0), STRICT_UINT] = None) -> Any:
    """OHLCV candles, oldest first: open time, open, high, low, close, volume (base), quote volume, trades."""
    inst = fapi._instrument(symbol)  # noqa: SLF001 (the one symbol lookup of the market endpoints)
    q = {"symbol": inst.symbol, "interval": interval, "limit": str(limit)}
    q |= {k: str(v) for k, v in (("startTime", start_ms), ("endTime", end_ms)) if v is not None}
    rows = fapi._klines(fapi._deps(request), q)  # noqa: SLF001
    return [{"open_time": r[0], "open": r[1], "high": r[2], "low": r[3], "close": r[4], "volume": r[5],
             "close_time": r[6], "quote_volume": r[7], "trades": r[8]} for r in rows]


@router.get("/ticker")
def ticker(request: Request, symbol: str) -> Any:
    """24h rolling ticker: open, high, low, last, change, volume, quote volume."""
    inst = fapi._instrument(symbol)  # noqa: SLF001
    t = fapi._ticker(fapi._deps(request), inst)  # noqa: SLF001
    return {"symbol": inst.symbol, "open": t["openPrice"], "high": t["highPrice"], "low": t["lowPrice"],
            "last": t["lastPrice"], "change": t["priceChange"], "change_percent": t["priceChangePercent"],
            "volume": t["volume"], "quote_volume": t["quoteVolume"], "trades": t["count"],
            "open_time": t["openTime"], "close_time": t["closeTime"]}


@router.get("/order-cost")
def order_cost(request: Request, symbol: str, leverage: Annotated[int, Query(ge=1, le=1000), STRICT_UINT],
               price: str = Query(max_length=64), quantity: str | None = Query(None, max_length=64), quote: str | None = Query(None, max_length=64)) -> Any:
    """What an order would cost, by the accounts processor's own rules (perpline.accounts.margin): the
    quantity (given, or the most a `quote` amount buys at `price`, rounded down to the lot), notional,
    the initial margin and the taker fee it would freeze, and the instrument's filters it would fail."""
    inst = fapi._instrument(symbol)  # noqa: SLF001
    if not 1 <= leverage <= inst.max_leverage:
        raise PerplineError(Code.BAD_LEVERAGE, f"leverage must be 1..{inst.max_leverage}")
    price_ticks = inst.parse_price(price)
    if quantity is not None:
        qty_lots = inst.parse_qty(quantity)
    elif quote is not None:
        qty_lots = parse_amount(quote) // inst.notional(price_ticks, 1)
    else:
        raise PerplineError(Code.MISSING_FIELD, "quantity or quote")
    margin, fee = mg.order_reservation(inst, price_ticks, qty_lots, leverage)
    check = inst.check_filters(price_ticks, qty_lots)
    return {"symbol": inst.symbol, "price": inst.format_price(price_ticks), "quantity": inst.format_qty(qty_lots),
            "notional": format_amount(inst.notional(price_ticks, qty_lots)), "leverage": leverage,
            "initial_margin": format_amount(margin), "fee": format_amount(fee), "cost": format_amount(margin + fee),
            "filter": None if check == Code.OK else {"code": int(check), "name": check.name}}
