"""Native market data that /fapi also serves: candles, the 24h ticker and an order's cost, computed
once by the service layer (perpline.api.service.market) and rendered here in the native shape."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from perpline.api import errors, models
from perpline.api.deps import ApiDeps, instrument, request_deps
from perpline.api.models import ok
from perpline.api.params import STRICT_UINT
from perpline.api.service import market
from perpline.contracts.codes import Code
from perpline.contracts.units import format_amount
from perpline.market.candles import INTERVALS_MS

router = APIRouter(prefix="/api/v1/market", tags=["market"], responses=errors.documented(*errors.COMMON_ERRORS))
INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d")
Deps = Annotated[ApiDeps, Depends(request_deps)]


@router.get("/candles", responses=ok(list[models.Candle]))
def candles(d: Deps, symbol: str, interval: str = Query("1m", pattern="^(1m|5m|15m|1h|4h|1d)$"),
            limit: Annotated[int, Query(ge=1, le=1500), STRICT_UINT] = 500, start_ms: Annotated[int | None, Query(ge=0), STRICT_UINT] = None,
            end_ms: Annotated[int | None, Query(ge=0), STRICT_UINT] = None) -> Any:
    """OHLCV candles, oldest first: open time, open, high, low, close, volume (base), quote volume, trades."""
    inst = instrument(symbol)
    step = INTERVALS_MS[interval]
    return [{"open_time": c.open_ms, "open": inst.format_price(c.open_ticks), "high": inst.format_price(c.high_ticks),
             "low": inst.format_price(c.low_ticks), "close": inst.format_price(c.close_ticks),
             "volume": inst.format_qty(c.volume_lots), "close_time": c.open_ms + step - 1,
             "quote_volume": format_amount(c.quote_minor), "trades": c.trades}
            for c in market.candles(d, inst, interval, start_ms, end_ms, limit)]


@router.get("/ticker", responses=ok(models.NativeTicker))
def ticker(d: Deps, symbol: str) -> Any:
    """24h rolling ticker: open, high, low, last, change, volume, quote volume."""
    inst = instrument(symbol)
    t = market.ticker(d, inst)
    day = t.day
    return {"symbol": inst.symbol, "open": inst.format_price(day.open_ticks), "high": inst.format_price(day.high_ticks),
            "low": inst.format_price(day.low_ticks), "last": inst.format_price(day.last_ticks),
            "change": inst.format_price(t.change_ticks), "change_percent": t.change_percent,
            "volume": inst.format_qty(day.volume_lots), "quote_volume": format_amount(day.quote_minor),
            "trades": day.trades, "open_time": day.open_ms, "close_time": t.close_ms}


@router.get("/order-cost", responses=ok(models.OrderCost))
def order_cost(symbol: str, leverage: Annotated[int, Query(ge=1, le=1000), STRICT_UINT],
               price: str = Query(max_length=64), quantity: str | None = Query(None, max_length=64), quote: str | None = Query(None, max_length=64)) -> Any:
    """What an order would cost, by the accounts processor's own rules (perpline.accounts.margin): the
    quantity (given, or the most a `quote` amount buys at `price`, rounded down to the lot), notional,
    the initial margin and the taker fee it would freeze, and the instrument's filters it would fail."""
    inst = instrument(symbol)
    c = market.order_cost(inst, leverage, price, quantity, quote)
    check = c.filter_code
    return {"symbol": inst.symbol, "price": inst.format_price(c.price_ticks), "quantity": inst.format_qty(c.qty_lots),
            "notional": format_amount(inst.notional(c.price_ticks, c.qty_lots)), "leverage": leverage,
            "initial_margin": format_amount(c.margin), "fee": format_amount(c.fee), "cost": format_amount(c.margin + c.fee),
            "filter": None if check == Code.OK else {"code": int(check), "name": check.name}}
