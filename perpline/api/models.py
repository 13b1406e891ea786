"""Response bodies, as /openapi.json describes them and the contract test checks them
(tests/e2e/test_api_contract.py validates every 200 body against these). Documentation models:
the routes return their renderers' dicts unchanged (perpline.api.native, perpline.api.binance), so
a Binance field name is spelled exactly as ccxt reads it, and a body that drifts from its model
fails the contract test rather than being silently reshaped."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

Dec = str  # a decimal string: amounts, prices, quantities and rates are never JSON numbers
Level = tuple[Dec, Dec]  # [price, quantity]


def ok(model: Any, description: str = "success") -> dict[int | str, dict[str, Any]]:
    """A route's documented 200 body."""
    return {200: {"model": model, "description": description}}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Empty(Body):
    pass


class Status(Body):
    status: str


class ServerTime(Body):
    serverTime: int  # noqa: N815 (Binance's wire names, as ccxt reads them)


class BinanceDepth(Body):
    lastUpdateId: int  # noqa: N815
    E: int
    T: int
    bids: list[Level]
    asks: list[Level]


class BinanceTrade(Body):
    id: int
    price: Dec
    qty: Dec
    quoteQty: Dec  # noqa: N815
    time: int
    isBuyerMaker: bool  # noqa: N815


class BinanceAggTrade(Body):
    a: int
    p: Dec
    q: Dec
    f: int
    l: int  # noqa: E741
    T: int
    m: bool


class BinanceTicker(Body):
    symbol: str
    priceChange: Dec  # noqa: N815
    priceChangePercent: Dec  # noqa: N815
    weightedAvgPrice: Dec  # noqa: N815
    lastPrice: Dec  # noqa: N815
    lastQty: Dec  # noqa: N815
    openPrice: Dec  # noqa: N815
    highPrice: Dec  # noqa: N815
    lowPrice: Dec  # noqa: N815
    volume: Dec
    quoteVolume: Dec  # noqa: N815
    openTime: int  # noqa: N815
    closeTime: int  # noqa: N815
    firstId: int  # noqa: N815
    lastId: int  # noqa: N815
    count: int


class BinancePremium(Body):
    symbol: str
    markPrice: Dec  # noqa: N815
    indexPrice: Dec  # noqa: N815
    estimatedSettlePrice: Dec  # noqa: N815
    lastFundingRate: Dec  # noqa: N815
    interestRate: Dec  # noqa: N815
    nextFundingTime: int  # noqa: N815
    time: int


class BinanceFundingRate(Body):
    symbol: str
    fundingTime: int  # noqa: N815
    fundingRate: Dec  # noqa: N815
    markPrice: Dec  # noqa: N815


# [open time, open, high, low, close, volume, close time, quote volume, trades, taker buy volume,
#  taker buy quote volume, "0"]
BinanceKline = tuple[int, Dec, Dec, Dec, Dec, Dec, int, Dec, int, Dec, Dec, Dec]


class NativeDepth(Body):
    symbol: str
    seq: int
    bids: list[Level]
    asks: list[Level]


class NativeTrade(Body):
    trade_id: int
    price: Dec
    quantity: Dec
    taker_side: str
    ts_ms: int
    seq: int


class Candle(Body):
    open_time: int
    open: Dec
    high: Dec
    low: Dec
    close: Dec
    volume: Dec
    close_time: int
    quote_volume: Dec
    trades: int


class NativeTicker(Body):
    symbol: str
    open: Dec
    high: Dec
    low: Dec
    last: Dec
    change: Dec
    change_percent: Dec
    volume: Dec
    quote_volume: Dec
    trades: int
    open_time: int
    close_time: int
