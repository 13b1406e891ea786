"""Market data pushed over a websocket, on top of REST polling (never instead of it):

    GET ws://host/api/v1/market/stream?symbol=BTCUSDT-PERP&levels=10&trades=16

Each frame is `{"type": "market", "symbol", "seq", "bids", "asks", "trades", "mark", "ts_ms"}`: the
top `levels` of the book as of matcher `seq` (the shapes of /api/v1/market/depth), the last `trades`
trades (/market/trades) and the mark (/market/mark, null before the first). A frame is sent when any
of them changed, checked every PUSH_INTERVAL_S, and at least every HEARTBEAT_S (so a gone client is
noticed). A client that wants every level change follows the seq with /market/depth/updates.

Bounded: at most MAX_STREAMS open per API process (more are closed with 1013, try again later), at
most MAX_LEVELS levels and MAX_TRADES trades a frame, and a client that does not take a frame within
SEND_TIMEOUT_S is dropped. Nothing here reads from the client; market data needs no session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from perpline.api import v1
from perpline.contracts.codes import PerplineError
from perpline.contracts.instruments import Instrument, load_catalog

router = APIRouter(prefix="/api/v1/market", tags=["market"])
PUSH_INTERVAL_S = 0.25
HEARTBEAT_S = 5.0
SEND_TIMEOUT_S = 5.0
MAX_STREAMS = 500
MAX_LEVELS = 100
MAX_TRADES = 100
POLICY_VIOLATION, TRY_AGAIN_LATER = 1008, 1013  # websocket close codes (RFC 6455)
_open_streams = 0  # per process; the event loop is single-threaded


def frame(deps: Any, inst: Instrument, levels: int, trades: int) -> dict[str, Any]:
    """One market frame from the read model, in the native REST shapes."""
    book = v1.depth(inst.symbol, deps, levels)
    try:
        mark = v1.mark_price(inst.symbol, deps)
    except PerplineError:
        mark = None
    return {"type": "market", **book, "trades": v1.trades(inst.symbol, deps, trades), "mark": mark,
            "ts_ms": int(time.time() * 1000)}


def _changed_key(f: dict[str, Any]) -> tuple[Any, ...]:
    last_trade = f["trades"][-1]["trade_id"] if f["trades"] else 0
    return f["seq"], last_trade, None if f["mark"] is None else f["mark"]["ts_ms"]


@router.websocket("/stream")
async def stream(ws: WebSocket, symbol: str = "", levels: int = 10, trades: int = 16) -> None:
    global _open_streams  # noqa: PLW0603 (one counter per process)
    inst = load_catalog().get(symbol)
    if inst is None or not (1 <= levels <= MAX_LEVELS and 1 <= trades <= MAX_TRADES):
        await ws.close(code=POLICY_VIOLATION, reason=f"a known symbol, levels 1..{MAX_LEVELS}, trades 1..{MAX_TRADES}")
        return
    if _open_streams >= MAX_STREAMS:
        await ws.close(code=TRY_AGAIN_LATER, reason="too many streams on this API process")
        return
    _open_streams += 1
    try:
        await ws.accept()
        await _push(ws, ws.app.state.deps, inst, levels, trades)
    finally:
        _open_streams -= 1


async def _push(ws: WebSocket, deps: Any, inst: Instrument, levels: int, trades: int) -> None:
    sent_key: tuple[Any, ...] | None = None
    sent_at = 0.0
    with contextlib.suppress(WebSocketDisconnect, TimeoutError, RuntimeError):  # gone, slow, or closed: done
        while True:
            f = frame(deps, inst, levels, trades)
            key = _changed_key(f)
            if key != sent_key or time.monotonic() - sent_at >= HEARTBEAT_S:
                await asyncio.wait_for(ws.send_json(f), SEND_TIMEOUT_S)
                sent_key, sent_at = key, time.monotonic()
            await asyncio.sleep(PUSH_INTERVAL_S)
