"""The payloads of the Binance USD-M streams (shared/BINANCE_USDM_WS.md §4, §6), built from the
service layer (perpline.api.service) and the same Binance renderers as the /fapi REST views
(perpline.api.binance), so a stream and its REST read agree.

Pure functions of (read model state, cursor) -> payload dicts; perpline.api.fstream decides when
to call them and who receives the result.
"""

from __future__ import annotations

from typing import Any

from perpline.accounts.order_status import ENDED_UNFILLED
from perpline.api import binance
from perpline.api.service import account, market
from perpline.contracts import messages as m
from perpline.contracts.instruments import Instrument, load_catalog
from perpline.market.candles import INTERVALS_MS

MAX_TRADES_PER_TICK = 1000  # trades read per symbol per tick; more than that in one tick is a gap


def instruments_by_stream_id() -> dict[str, Instrument]:
    """Lowercase Binance id (btcusdt) -> instrument: how a stream name names its symbol."""
    return {i.binance_symbol.lower(): i for i in load_catalog().instruments.values()}


def depth_update(inst: Instrument, changes: list[tuple[int, str, str, int]], prev_u: int, u: int,
                 now_ms: int) -> dict[str, Any]:
    """One diff covering update ids (prev_u, u]: each touched level's quantity as of u (absolute)."""
    final: dict[tuple[str, str], int] = {}
    for _, side, price, lots in changes:
        final[(side, price)] = lots
    bids = [[p, inst.format_qty(n)] for (s, p), n in final.items() if s == "BUY"]
    asks = [[p, inst.format_qty(n)] for (s, p), n in final.items() if s == "SELL"]
    return {"e": "depthUpdate", "E": now_ms, "T": now_ms, "s": inst.binance_symbol, "U": prev_u + 1, "u": u,
            "pu": prev_u, "b": bids, "a": asks}


def trade(inst: Instrument, t: m.Trade, now_ms: int) -> dict[str, Any]:
    return {"e": "trade", "E": now_ms, "T": t.ts_ms, "s": inst.binance_symbol, "t": t.trade_id, "p": t.price,
            "q": t.quantity, "X": "MARKET", "m": t.taker_side == "SELL"}


def agg_trade(inst: Instrument, t: m.Trade, now_ms: int) -> dict[str, Any]:
    """As /fapi/v1/aggTrades: every trade is its own aggregate (one maker per trade)."""
    return {"e": "aggTrade", "E": now_ms, "s": inst.binance_symbol, "a": t.trade_id, "p": t.price, "q": t.quantity,
            "f": t.trade_id, "l": t.trade_id, "T": t.ts_ms, "m": t.taker_side == "SELL"}


def ticker(deps: Any, inst: Instrument, now_ms: int, mini: bool) -> dict[str, Any]:
    """24hrMiniTicker / 24hrTicker from /fapi/v1/ticker/24hr's own numbers."""
    r = binance.ticker(inst, market.ticker(deps, inst))
    base = {"e": "24hrMiniTicker" if mini else "24hrTicker", "E": now_ms, "s": inst.binance_symbol,
            "c": r["lastPrice"], "o": r["openPrice"], "h": r["highPrice"], "l": r["lowPrice"], "v": r["volume"],
            "q": r["quoteVolume"]}
    if mini:
        return base
    return {**base, "p": r["priceChange"], "P": r["priceChangePercent"], "w": r["weightedAvgPrice"],
            "Q": r["lastQty"], "O": r["openTime"], "C": r["closeTime"], "F": r["firstId"], "L": r["lastId"],
            "n": r["count"]}


def kline(deps: Any, inst: Instrument, interval: str, now_ms: int) -> dict[str, Any] | None:
    """The open candle of `interval` as /fapi/v1/klines serves it, or None before the first trade."""
    assert interval in INTERVALS_MS
    rows = market.candles(deps, inst, interval, None, None, 1)
    if not rows:
        return None
    c = rows[-1]
    r = binance.kline(inst, interval, c)
    first, last = c.first_trade_id, c.last_trade_id
    return {"e": "kline", "E": now_ms, "s": inst.binance_symbol, "k": {
        "t": r[0], "T": r[6], "s": inst.binance_symbol, "i": interval, "f": first, "L": last, "o": r[1], "c": r[4],
        "h": r[2], "l": r[3], "v": r[5], "n": r[8], "x": now_ms > r[6], "q": r[7], "V": r[9], "Q": r[10], "B": "0"}}


def mark_price(deps: Any, inst: Instrument, now_ms: int) -> dict[str, Any]:
    """markPriceUpdate from /fapi/v1/premiumIndex's own numbers."""
    r = binance.premium(inst, market.premium(deps, inst))
    return {"e": "markPriceUpdate", "E": now_ms, "s": inst.binance_symbol, "p": r["markPrice"], "i": r["indexPrice"],
            "P": r["estimatedSettlePrice"], "r": r["lastFundingRate"], "T": r["nextFundingTime"]}


def book_ticker(deps: Any, inst: Instrument, now_ms: int) -> dict[str, Any]:
    book = market.depth(deps, inst, 1)
    seq, bids, asks = book.seq, book.bids, book.asks
    bid, bid_qty = (bids[0][0], inst.format_qty(bids[0][1])) if bids else ("0", "0")
    ask, ask_qty = (asks[0][0], inst.format_qty(asks[0][1])) if asks else ("0", "0")
    return {"e": "bookTicker", "u": seq, "E": now_ms, "T": now_ms, "s": inst.binance_symbol, "b": bid, "B": bid_qty,
            "a": ask, "A": ask_qty}


# --- user data ------------------------------------------------------------------------------------


def order_trade_update(inst: Instrument, o: m.OrderView, fill: m.FillRecorded | None, now_ms: int,
                       first_seen: bool) -> dict[str, Any]:
    """ORDER_TRADE_UPDATE for one order change; with `fill`, the x=TRADE event of that one fill."""
    status = o.status
    if fill is not None:
        execution = "TRADE"
    elif status in ENDED_UNFILLED:
        execution = status
    else:
        execution = "NEW" if first_seen else "AMENDMENT"
    at_ms = fill.ts_ms if fill is not None else o.updated_ms
    return {"e": "ORDER_TRADE_UPDATE", "E": now_ms, "T": at_ms, "o": {
        "s": inst.binance_symbol, "c": o.client_order_id, "S": o.side, "o": o.order_type, "f": o.time_in_force,
        "q": o.quantity, "p": o.price if o.order_type == "LIMIT" and o.price else "0",
        "ap": o.avg_price, "sp": "0", "x": execution, "X": status, "i": o.order_id,
        "l": fill.quantity if fill else "0", "z": o.filled, "L": fill.price if fill else "0",
        "n": fill.fee if fill else "0", "N": fill.fee_asset if fill else inst.margin_asset, "T": at_ms,
        "t": fill.trade_id if fill else 0, "b": "0", "a": "0", "m": bool(fill and fill.liquidity == "MAKER"),
        "R": o.reduce_only, "wt": "CONTRACT_PRICE", "ot": o.order_type, "ps": "BOTH", "cp": False,
        "rp": fill.realized_pnl if fill else "0", "pP": False, "si": 0, "ss": 0, "V": "NONE", "pm": "NONE",
        "gtd": 0}}


def balance_entry(b: m.BalanceChanged) -> dict[str, Any]:
    return {"a": b.asset, "wb": b.wallet, "cw": b.wallet, "bc": "0"}


def position_entry(deps: Any, inst: Instrument, p: m.PositionChanged) -> dict[str, Any]:
    """One position as /fapi/v3/positionRisk values it (entry, unrealised PnL at the mark)."""
    # one valuation of a position (the frame reads only its prices and PnL: no orders' margin, no ADL rank)
    row = binance.position(account.value(deps, inst, p))
    return {"s": inst.binance_symbol, "pa": p.size, "ep": p.entry_price, "bep": row["breakEvenPrice"],
            "cr": p.realized_pnl, "up": row["unRealizedProfit"], "mt": "isolated", "iw": p.margin, "ps": "BOTH",
            "ma": inst.margin_asset}


def account_update(reason: str, balances: list[dict[str, Any]], positions: list[dict[str, Any]], at_ms: int,
                   now_ms: int) -> dict[str, Any]:
    return {"e": "ACCOUNT_UPDATE", "E": now_ms, "T": at_ms, "a": {"m": reason, "B": balances, "P": positions}}


def listen_key_expired(key: str, now_ms: int) -> dict[str, Any]:
    return {"e": "listenKeyExpired", "E": now_ms, "listenKey": key}
