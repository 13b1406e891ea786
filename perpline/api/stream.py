"""Market data pushed over a websocket, on top of REST polling (never instead of it):

    GET ws://host/api/v1/market/stream?symbol=BTCUSDT-PERP&levels=10&trades=16

Each frame is `{"type": "market", "symbol", "seq", "bids", "asks", "trades", "mark", "ts_ms"}`: the
top `levels` of the book as of matcher `seq` (the shapes of /api/v1/market/depth), the last `trades`
trades (/market/trades) and the mark (/market/mark, null before the first). A frame is sent when any
of them changed, checked every PUSH_INTERVAL_S, and at least every HEARTBEAT_S (so a gone client is
noticed). A client that wants every level change follows the seq with /market/depth/updates.

An account's own data, for a web session:

    GET ws://host/api/v1/account/stream     then send {"token": "<access token>"} within AUTH_TIMEOUT_S

Frames `{"type": "account", "balances", "positions", "open_orders", "ts_ms"}` in the shapes of
/api/v1/account/balances, /account/positions (with mark and unrealised PnL) and /orders, on change
and as heartbeats. A bad token closes with 4001; the stream closes with 4001 when the session ends
(logout, refresh) or its token expires: the client refreshes and connects again.

A market frame is built and encoded once per (symbol, levels, trades) per push tick and the same text is
sent to every connection that asks for it in that tick (`FrameCache`), not once per subscriber.

Bounded: at most MAX_STREAMS open per API process (more are closed with 1013, try again later), at
most MAX_LEVELS levels and MAX_TRADES trades a frame, and a client that does not take a frame within
SEND_TIMEOUT_S is dropped. Market streams read nothing from the client; market data needs no session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from perpline.api import native, ratelimit
from perpline.api.service import account, market
from perpline.api.service import sessions as session_service
from perpline.contracts.codes import PerplineError
from perpline.contracts.instruments import Instrument, load_catalog

router = APIRouter(prefix="/api/v1", tags=["market"])
PUSH_INTERVAL_S = 0.25
HEARTBEAT_S = 5.0
SEND_TIMEOUT_S = 5.0
MAX_STREAMS = 500
MAX_LEVELS = 100
MAX_TRADES = 100
AUTH_TIMEOUT_S = 5.0
POLICY_VIOLATION, TRY_AGAIN_LATER, UNAUTHORIZED = 1008, 1013, 4001  # websocket close codes (RFC 6455; 4xxx ours)
MAX_CACHED_FRAMES = 256  # distinct (symbol, levels, trades) frames kept for the current tick
_open_streams = 0  # per process; the event loop is single-threaded
Frame = tuple[dict[str, Any], str]  # a frame and its JSON text


def encoded(f: dict[str, Any]) -> Frame:
    return f, json.dumps(f, separators=(",", ":"), ensure_ascii=False)  # as WebSocket.send_json


class FrameCache:
    """One market frame per (symbol, levels, trades) per push tick, shared by every connection asking for
    it within the tick: built and JSON-encoded once, however many subscribers. At most MAX_CACHED_FRAMES
    keys; a full cache starts again (the event loop is single-threaded: no lock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._frames: dict[tuple[str, int, int], tuple[int, Frame]] = {}

    def get(self, key: tuple[str, int, int], build: Callable[[], dict[str, Any]]) -> Frame:
        tick = int(self._clock() / PUSH_INTERVAL_S)
        hit = self._frames.get(key)
        if hit is not None and hit[0] == tick:
            return hit[1]
        if len(self._frames) >= MAX_CACHED_FRAMES:
            self._frames.clear()
        made = encoded(build())
        self._frames[key] = (tick, made)
        return made


def _frames_of(ws: WebSocket) -> FrameCache:
    """The API process's one FrameCache (kept on the app, so each app, a test's included, has its own)."""
    cache = getattr(ws.app.state, "market_frames", None)
    if cache is None:
        cache = ws.app.state.market_frames = FrameCache()
    return cache


def frame(deps: Any, inst: Instrument, levels: int, trades: int) -> dict[str, Any]:
    """One market frame from the service layer, in the native REST shapes."""
    mark = market.mark(deps, inst)
    return {"type": "market", **native.depth(inst, market.depth(deps, inst, levels)),
            "trades": native.trades(market.trades(deps, inst, trades)),
            "mark": None if mark is None else native.strip(mark), "ts_ms": int(time.time() * 1000)}


def _changed_key(f: dict[str, Any]) -> tuple[Any, ...]:
    last_trade = f["trades"][-1]["trade_id"] if f["trades"] else 0
    return f["seq"], last_trade, None if f["mark"] is None else f["mark"]["ts_ms"]


@router.websocket("/market/stream")
async def stream(ws: WebSocket, symbol: str = "", levels: int = 10, trades: int = 16) -> None:
    if not await ratelimit.admit_websocket(ws):
        return
    inst = load_catalog().get(symbol)
    if inst is None or not (1 <= levels <= MAX_LEVELS and 1 <= trades <= MAX_TRADES):
        await ws.close(code=POLICY_VIOLATION, reason=f"a known symbol, levels 1..{MAX_LEVELS}, trades 1..{MAX_TRADES}")
        return
    async with _slot(ws) as accepted:
        if accepted:
            deps, frames, key = ws.app.state.deps, _frames_of(ws), (inst.symbol, levels, trades)
            await _push(ws, lambda: frames.get(key, lambda: frame(deps, inst, levels, trades)), _changed_key,
                        lambda: True)


@contextlib.asynccontextmanager
async def _slot(ws: WebSocket) -> AsyncIterator[bool]:
    """One of the process's MAX_STREAMS, accepted (True), or the client told to come back later (False)."""
    global _open_streams  # noqa: PLW0603 (one counter per process)
    if _open_streams >= MAX_STREAMS:
        await ws.close(code=TRY_AGAIN_LATER, reason="too many streams on this API process")
        yield False
        return
    _open_streams += 1
    try:
        await ws.accept()
        yield True
    finally:
        _open_streams -= 1


def account_frame(deps: Any, account_id: int) -> dict[str, Any]:
    return {"type": "account", "balances": [native.strip(b) for b in account.balances(deps, account_id)],
            "positions": [native.position(p) for p in account.positions(deps, account_id, "all")],
            "open_orders": [native.order(o) for o in account.orders(deps, account_id, "open")],
            "ts_ms": int(time.time() * 1000)}


def _account_key(f: dict[str, Any]) -> str:
    return json.dumps([f["balances"], f["positions"], f["open_orders"]], sort_keys=True)


@router.websocket("/account/stream")
async def account_stream(ws: WebSocket) -> None:
    if not await ratelimit.admit_websocket(ws):
        return
    async with _slot(ws) as accepted:
        if not accepted:
            return
        deps = ws.app.state.deps
        try:
            hello = await asyncio.wait_for(ws.receive_json(), AUTH_TIMEOUT_S)
            claims = await session_service.token_claims(deps, str(hello.get("token", "")) if isinstance(hello, dict) else "")
        except (PerplineError, TimeoutError, ValueError, KeyError, WebSocketDisconnect) as err:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await ws.close(code=UNAUTHORIZED, reason=str(err)[:100] or "send {\"token\": <access token>} first")
            return
        await _push(ws, lambda: encoded(account_frame(deps, claims.user_id)), _account_key,
                    lambda: session_service.session_live(deps, claims))
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close(code=UNAUTHORIZED, reason="the session ended")


async def _push(ws: WebSocket, build: Callable[[], Frame], key_of: Callable[[dict[str, Any]], Any],
                alive: Callable[[], bool]) -> None:
    """Send build()'s frame when its key changed or HEARTBEAT_S passed, while alive(); return when the
    client is gone, too slow, or alive() turned false."""
    sent_key: Any = None
    sent_at = 0.0
    with contextlib.suppress(WebSocketDisconnect, TimeoutError, RuntimeError):  # gone, slow, or closed: done
        while alive():
            f, text = build()
            key = key_of(f)
            if key != sent_key or time.monotonic() - sent_at >= HEARTBEAT_S:
                await asyncio.wait_for(ws.send_text(text), SEND_TIMEOUT_S)
                sent_key, sent_at = key, time.monotonic()
            await asyncio.sleep(PUSH_INTERVAL_S)
