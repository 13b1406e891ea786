"""Binance USD-M WebSocket streams for ccxt.pro's binanceusdm (shared/BINANCE_USDM_WS.md), with the
websocket base ws://HOST:PORT/fstream/ws:

    /fstream/public/ws/<n>, /fstream/market/ws/<n>, /fstream/ws/<n>   market data, SUBSCRIBE frames
    /fstream/ws/<stream>[/<stream>...]                                  those streams, raw payloads
    /fstream/stream?streams=a/b, /fstream/{public,market}/stream?...    combined: {"stream","data"}
    /fstream/private/ws?listenKey=K, /fstream/ws/<listenKey>            user data (perpline.api.listenkey)

Every stream is served on every path (ccxt picks the public/market split by itself; the slot <n>
is ignored). One Hub per API process builds each frame once per tick from the read model (the same
events and the same renderers as /fapi's REST views, perpline.api.fstream_frames) and hands the
encoded text to every subscriber's bounded queue. A tick runs whenever the read model applied a
batch, and at least every TICK_S; a tick is synchronous, so a SUBSCRIBE lands between two ticks.

Depth: the update id is the symbol's matcher seq, which /fapi/v1/depth returns as lastUpdateId. A
diff covers ids (pu, u] with U = pu + 1, so the diffs tile the id space and any snapshot taken after
the SUBSCRIBE reply (lastUpdateId >= the first diff's pu) lands inside the chain. Diffs are sent as
soon as the read model applied the change: @depth, @depth@100ms, @250ms and @500ms are one feed.

Sending: a frame is encoded once (text, then the websocket frame bytes) and the same bytes go to
every subscriber; each connection gets one transport write per tick with all its frames. That is the
server's own transport under the ASGI socket (uvicorn's); a connection that negotiated
permessage-deflate (per-connection compression) or a server without a reachable transport takes the
ASGI path instead: a bounded queue (MAX_QUEUED_FRAMES) and a sender task.

Slow clients are disconnected, never waited for: the tick writes without awaiting, the kernel send
buffer of a stream socket is small (SEND_BUFFER_BYTES, so a stalled reader shows in user space
soon), and a connection whose oldest unsent frame is older than MAX_LAG_S, or that holds more than
MAX_BUFFERED_BYTES unsent, is aborted (its buffer discarded). On the ASGI path, a full queue or a
send stuck for MAX_LAG_S does the same.

Limits (Binance's): MAX_STREAMS_PER_CONNECTION, MAX_MESSAGES_PER_S incoming (more closes the
socket), connections per address (PERPLINE_FSTREAM_CONNECTIONS_PER_IP), MAX_CONNECTION_S per
connection. Keepalive (uvicorn's, set by uvicorn_ws_options): a control ping every PING_EVERY_S, and a
connection that does not answer one within PONG_WITHIN_S is closed; client pings are answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import Counter as Tally
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from prometheus_client import Counter

from perpline.api import fstream_frames as frames
from perpline.api import ratelimit, streamdelay
from perpline.api.clientip import client_ip
from perpline.api.service.listenkeys import ListenKey, ListenKeys
from perpline.contracts import messages as m
from perpline.contracts.instruments import Instrument, load_catalog
from perpline.market.candles import INTERVALS_MS

log = logging.getLogger("perpline.api.fstream")
router = APIRouter(prefix="/fstream", tags=["binance usd-m streams"])

TICK_S = 0.1  # the longest a tick waits for read-model changes (timed streams: mark price, rolling tickers)
MAX_QUEUED_FRAMES = 1000  # per connection on the ASGI path; a full queue disconnects that client
MAX_LAG_S = 5.0  # a frame not yet taken by the client's socket after this long disconnects it
MAX_BUFFERED_BYTES = 4 * 1024 * 1024  # unsent bytes per connection; more disconnects it
SEND_BUFFER_BYTES = 64 * 1024  # SO_SNDBUF of a stream socket (the kernel doubles it): a stall shows soon
PING_EVERY_S = 180.0  # Binance pings every 3 minutes...
PONG_WITHIN_S = 600.0  # ...and disconnects a connection that has not answered within 10 minutes
MAX_STREAMS_PER_CONNECTION = 1024
MAX_MESSAGES_PER_S = 10
MAX_CONNECTIONS = 10_000  # per API process
MAX_CONNECTION_S = 24 * 3600
MAX_REQUEST_CHARS = 64 * 1024
MAX_PENDING_FILLS = 100_000  # fills waiting for their order's change (normally the very next event)
MARK_EVERY_S = {"1s": 1.0, "3s": 3.0}
POLICY_VIOLATION, TRY_AGAIN_LATER = 1008, 1013
DROPPED = Counter("perpline_fstream_dropped_total", "stream connections closed by the server", ["reason"])
_DEPTH_SUFFIXES = ("depth", "depth@100ms", "depth@250ms", "depth@500ms")
_PLAIN = ("trade", "aggTrade", "miniTicker", "ticker", "bookTicker")
_ALL_MARKET = {"!miniTicker@arr": ("miniTicker", ""), "!ticker@arr": ("ticker", ""),
               "!markPrice@arr": ("markPrice", "3s"), "!markPrice@arr@1s": ("markPrice", "1s"),
               "!bookTicker": ("bookTicker", "")}


def connections_per_ip() -> int:
    return int(os.environ.get("PERPLINE_FSTREAM_CONNECTIONS_PER_IP", "300"))


def uvicorn_ws_options() -> dict[str, Any]:
    """uvicorn's websocket keepalive as Binance's: perpline.api.main passes these to uvicorn.run."""
    return {"ws_ping_interval": PING_EVERY_S, "ws_ping_timeout": PONG_WITHIN_S}


def ws_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame (RFC 6455 5.2), as a server sends it: the same bytes for every
    subscriber, so a frame is encoded once however many receive it."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def server_transport(ws: WebSocket) -> asyncio.WriteTransport | None:
    """The server's transport under an ASGI socket (uvicorn hands the app its protocol's bound receive),
    if frames may be written to it as they are: None when the client negotiated permessage-deflate
    (each connection then compresses on its own) or when the server is not one that exposes it."""
    offered = ws.headers.get("sec-websocket-extensions", "")
    if "permessage-deflate" in offered:
        return None
    transport = getattr(getattr(ws._receive, "__self__", None), "transport", None)  # noqa: SLF001
    needed = ("write", "get_write_buffer_size", "abort", "is_closing", "get_extra_info")
    return transport if all(hasattr(transport, n) for n in needed) else None


def small_send_buffer(transport: Any) -> None:
    """SO_SNDBUF = SEND_BUFFER_BYTES: without it the kernel lets a stalled client's data grow to
    megabytes before anything shows in the process."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


class MessageRate:
    """Incoming messages of one connection per whole second: more than MAX_MESSAGES_PER_S refuses."""

    def __init__(self) -> None:
        self.window_s, self.count = -1, 0

    def allow(self, now_s: float) -> bool:
        second = int(now_s)
        self.window_s, self.count = (second, 1) if second != self.window_s else (second, self.count + 1)
        return self.count <= MAX_MESSAGES_PER_S


@dataclass(frozen=True)
class Spec:
    """What a stream name asks for: a kind, its symbol (None: every symbol, one array frame), a parameter
    (kline interval, mark-price cadence)."""

    kind: str
    symbol: str | None
    param: str = ""


class BadStream(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def parse_stream(name: str, by_id: dict[str, Instrument]) -> Spec:
    """A stream name's Spec; raises BadStream (-1121 for an unknown symbol, 2 for an unknown stream)."""
    if name in _ALL_MARKET:
        kind, param = _ALL_MARKET[name]
        return Spec(kind, None, param)
    sym, _, rest = name.partition("@")
    kind, param = "", ""
    if rest in _DEPTH_SUFFIXES:
        kind = "depth"
    elif rest in _PLAIN:
        kind = rest
    elif rest in ("markPrice", "markPrice@1s"):
        kind, param = "markPrice", "1s" if rest.endswith("@1s") else "3s"
    elif rest.startswith("kline_") and rest[6:] in INTERVALS_MS:
        kind, param = "kline", rest[6:]
    if not kind:
        raise BadStream(2, f"Invalid request: unknown stream {name[:80]!r}")
    inst = by_id.get(sym.lower())
    if inst is None:
        raise BadStream(-1121, "Invalid symbol.")
    return Spec(kind, inst.symbol, param)


@dataclass(eq=False)
class Conn:
    """One socket and its streams. With a transport, frames of a tick gather in `out` and are written
    at once; `marks` holds (bytes written so far, when) for each write not fully sent yet, so the age
    of the oldest unsent frame is known. Without one, the ASGI path: `queue` (text; None closes after
    what is queued) and a sender task (`sending_since`: when its current send started)."""

    ws: WebSocket
    ip: str
    combined: bool = False
    streams: set[str] = field(default_factory=set)
    account: int | None = None
    listen_key: ListenKey | None = None
    transport: Any = None
    out: list[bytes] = field(default_factory=list)
    written: int = 0
    marks: deque[tuple[int, float]] = field(default_factory=deque)
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(MAX_QUEUED_FRAMES))
    sending_since: float | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set: stop now (dropped, key ended)


class Hub:
    """The streams of one API process: subscriptions, per-symbol cursors, and the tick that fans out."""

    def __init__(self, deps: Any, keys: ListenKeys) -> None:
        self.deps = deps
        self.keys = keys
        keys.on_end = self.end_key
        self.by_id = frames.instruments_by_stream_id()
        self.subs: dict[str, set[Conn]] = {}
        self.specs: dict[str, Spec] = {}
        self.private: dict[int, set[Conn]] = {}
        self.by_key: dict[str, set[Conn]] = {}
        self.ips: Tally[str] = Tally()
        self.conns: set[Conn] = set()
        self.dirty: set[Conn] = set()  # connections with frames to write at the end of this tick
        self.depth_u: dict[str, int] = {}  # symbol -> u of the last diff (or the seq it was silently moved to)
        self.trade_id: dict[str, int] = {}  # symbol -> the last trade streamed
        self.sent: dict[tuple[str, str, str], Any] = {}  # (kind, symbol, param) -> what was last sent
        self.timed: dict[tuple[str, str], float] = {}  # (symbol or "", cadence) -> when the mark was last sent
        self.feed_at = -1
        self.pending_fills: OrderedDict[tuple[int, int], m.FillRecorded] = OrderedDict()
        self.wallets: dict[tuple[int, str], str] = {}  # (account, asset) -> last wallet balance seen
        self.group: list[Any] = []
        self.streamed_ms: list[int] = []  # the T of each trade this tick streams (perpline.api.streamdelay)
        self._task: asyncio.Task[None] | None = None
        self._expired_at = 0.0
        self._swept_at = 0.0

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fstream-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        rm = self.deps.readmodel
        while True:
            seen = rm.applied
            try:
                self.tick(int(time.time() * 1000), time.monotonic())
            except Exception:  # noqa: BLE001 (a bad tick must not end every stream)
                log.exception("stream tick failed")
            await rm.wait_until(lambda: rm.applied != seen, TICK_S)  # noqa: B023 (read at once)

    # --- connections -----------------------------------------------------------------------
    def admit(self, conn: Conn) -> str | None:
        """Count a new connection in; why it is refused, or None."""
        if len(self.conns) >= MAX_CONNECTIONS:
            return "too many stream connections on this API process"
        if self.ips[conn.ip] >= connections_per_ip():
            return "too many stream connections from this address"
        self.conns.add(conn)
        self.ips[conn.ip] += 1
        return None

    def remove(self, conn: Conn) -> None:
        self.conns.discard(conn)
        self.dirty.discard(conn)
        self.ips[conn.ip] -= 1
        if self.ips[conn.ip] <= 0:
            del self.ips[conn.ip]
        self.unsubscribe(conn, list(conn.streams))
        if conn.account is not None:
            self.private.get(conn.account, set()).discard(conn)
            if not self.private.get(conn.account):
                self.private.pop(conn.account, None)
        if conn.listen_key is not None:
            self.by_key.get(conn.listen_key.key, set()).discard(conn)
            self.keys.detach(conn.listen_key)

    def subscribe(self, conn: Conn, names: list[str]) -> None:
        """Subscribe to checked names. A depth cursor starts at the book's current seq, so the first diff
        this connection gets has pu <= any snapshot it takes after the reply."""
        for name in names:
            spec = parse_stream(name, self.by_id)
            self.specs[name] = spec
            self.subs.setdefault(name, set()).add(conn)
            conn.streams.add(name)
            if spec.kind == "depth" and spec.symbol is not None:
                self.depth_u.setdefault(spec.symbol, self.deps.readmodel.book_seq(spec.symbol))
            elif spec.kind in ("miniTicker", "ticker", "kline", "bookTicker"):  # the current state at the next tick
                self.sent = {k: v for k, v in self.sent.items() if k[0] != spec.kind or spec.symbol not in (None, k[1])}

    def unsubscribe(self, conn: Conn, names: list[str]) -> None:
        for name in names:
            conn.streams.discard(name)
            subscribers = self.subs.get(name)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self.subs[name]
                    del self.specs[name]

    def attach_private(self, conn: Conn, entry: ListenKey) -> None:
        conn.account, conn.listen_key = entry.user_id, entry
        self.private.setdefault(entry.user_id, set()).add(conn)
        self.by_key.setdefault(entry.key, set()).add(conn)

    def end_key(self, key: str) -> None:
        """A listenKey ended (deleted or expired): its sockets get listenKeyExpired, then are closed."""
        text = json.dumps(frames.listen_key_expired(key, int(time.time() * 1000)))
        for conn in list(self.by_key.pop(key, ())):
            conn.listen_key = None  # its key is gone: nothing to detach
            if self.send_now(conn, text):
                if conn.transport is not None:
                    conn.ended.set()  # the frame is written: the socket closes after it
                else:
                    with contextlib.suppress(asyncio.QueueFull):
                        conn.queue.put_nowait(None)

    def push(self, conn: Conn, text: str, frame: bytes | None = None) -> bool:
        """Give a connection a frame (`frame`: the text already encoded). It is written at the end of the
        tick (flush); on the ASGI path it is queued, and a full queue disconnects the client."""
        if conn.ended.is_set():
            return False
        if conn.transport is not None:
            conn.out.append(frame if frame is not None else ws_frame(text.encode()))
            self.dirty.add(conn)
            return True
        try:
            conn.queue.put_nowait(text)
            return True
        except asyncio.QueueFull:
            self.drop(conn, "slow")
            return False

    def send_now(self, conn: Conn, text: str) -> bool:
        """A frame written at once (a reply to a request, listenKeyExpired), behind what was written."""
        if not self.push(conn, text):
            return False
        self.flush(conn, time.monotonic())
        return not conn.ended.is_set()

    def flush(self, conn: Conn, now_s: float) -> None:
        """One write of the frames gathered for a connection, then its lag check."""
        if conn.out and not conn.ended.is_set():
            data = conn.out[0] if len(conn.out) == 1 else b"".join(conn.out)
            conn.out.clear()
            if conn.transport.is_closing():
                conn.ended.set()
                return
            conn.transport.write(data)
            conn.written += len(data)
            conn.marks.append((conn.written, now_s))
        self.check_lag(conn, now_s)

    def check_lag(self, conn: Conn, now_s: float) -> None:
        """Disconnect a client whose oldest unsent frame waited more than MAX_LAG_S, or that holds more
        than MAX_BUFFERED_BYTES unsent (uvicorn's own pings and pongs count as unsent too: a few bytes)."""
        if conn.ended.is_set():
            return
        if conn.transport is None:
            if conn.sending_since is not None and now_s - conn.sending_since > MAX_LAG_S:
                self.drop(conn, "slow")
            return
        unsent = conn.transport.get_write_buffer_size()
        sent = conn.written - unsent
        while conn.marks and conn.marks[0][0] <= sent:
            conn.marks.popleft()
        if unsent > MAX_BUFFERED_BYTES or conn.marks and now_s - conn.marks[0][1] > MAX_LAG_S:
            self.drop(conn, "slow")

    def drop(self, conn: Conn, reason: str) -> None:
        """Disconnect at once: no more frames, and what the client has not taken is discarded (a graceful
        close would wait behind it)."""
        DROPPED.labels(reason).inc()
        conn.ended.set()
        conn.out.clear()
        self.unsubscribe(conn, list(conn.streams))
        if conn.transport is not None:
            conn.transport.abort()

    # --- the tick ------------------------------------------------------------------------------
    def tick(self, now_ms: int, now_s: float) -> None:
        if now_s - self._expired_at >= 1.0:
            self._expired_at = now_s
            self.keys.expire(now_ms)
        if now_s - self._swept_at >= 1.0:  # the lag of connections that got nothing new lately
            self._swept_at = now_s
            for conn in list(self.conns):
                self.check_lag(conn, now_s)
        out: dict[Spec, list[str]] = {}
        active = set(self.specs.values())
        for inst in self.by_id.values():
            self._market(inst, active, out, now_ms, now_s)
        for spec in active:
            if spec.symbol is None and spec.kind != "bookTicker":
                self._all_market(spec, out, now_ms, now_s)
        self._fan_out(out)
        self._user_data(now_ms)
        built_s = time.monotonic()
        dirty, self.dirty = self.dirty, set()
        for conn in dirty:
            self.flush(conn, now_s)
        self._timed(now_s, built_s)

    def _timed(self, start_s: float, built_s: float) -> None:
        """The tick's parts, and the trades it streamed reaching their sockets (perpline.api.streamdelay)."""
        end_s = time.monotonic()
        streamdelay.TICK_SECONDS.labels("build").observe(built_s - start_s)
        streamdelay.TICK_SECONDS.labels("write").observe(end_s - built_s)
        if self.streamed_ms:
            written_ms = time.time() * 1000
            for trade_ms in self.streamed_ms:
                streamdelay.trade_at("written", trade_ms, written_ms)
            self.streamed_ms.clear()

    def _fan_out(self, out: dict[Spec, list[str]]) -> None:
        """Each frame is encoded once (and once more in its combined wrapping), and the connections that
        get the same streams this tick share one payload, joined once: with 1,000 subscribers to the same
        streams a tick costs one join and one write per socket, not a push per frame per socket."""
        fresh = [(name, texts) for name, spec in self.specs.items() if (texts := out.get(spec))]
        if not fresh:
            return
        wanted: dict[Conn, list[int]] = {}
        for i, (name, _) in enumerate(fresh):
            for conn in self.subs.get(name, ()):
                wanted.setdefault(conn, []).append(i)
        encoded: dict[tuple[int, bool], bytes] = {}
        payloads: dict[tuple[tuple[int, ...], bool], bytes] = {}
        for conn, indexes in wanted.items():
            if conn.transport is None:  # the ASGI path takes its texts one by one
                for i in indexes:
                    name, texts = fresh[i]
                    for text in texts:
                        self.push(conn, _wrapped(name, text) if conn.combined else text)
                continue
            key = (tuple(indexes), conn.combined)
            payload = payloads.get(key)
            if payload is None:
                payload = payloads[key] = b"".join(_encoded(fresh, i, conn.combined, encoded) for i in indexes)
            self.push(conn, "", payload)

    def _market(self, inst: Instrument, active: set[Spec], out: dict[Spec, list[str]], now_ms: int,
                now_s: float) -> None:
        sym, deps = inst.symbol, self.deps
        self._depth(inst, Spec("depth", sym) in active, out, now_ms)
        self._trades(inst, active, out, now_ms)
        for kind in ("miniTicker", "ticker"):
            if Spec(kind, sym) in active or Spec(kind, None) in active:
                payload = frames.ticker(deps, inst, now_ms, kind == "miniTicker")
                if self._changed((kind, sym, ""), {k: v for k, v in payload.items() if k not in ("E", "C")}):
                    out.setdefault(Spec(kind, sym), []).append(json.dumps(payload))
        if Spec("bookTicker", sym) in active or Spec("bookTicker", None) in active:
            payload = frames.book_ticker(deps, inst, now_ms)
            if self._changed(("bookTicker", sym, ""), (payload["b"], payload["B"], payload["a"], payload["A"])):
                text = json.dumps(payload)
                out.setdefault(Spec("bookTicker", sym), []).append(text)
                out.setdefault(Spec("bookTicker", None), []).append(text)
        for interval in INTERVALS_MS:
            if Spec("kline", sym, interval) in active:
                candle = frames.kline(deps, inst, interval, now_ms)
                if candle is not None and self._changed(("kline", sym, interval), candle["k"]):
                    out.setdefault(Spec("kline", sym, interval), []).append(json.dumps(candle))
        for cadence, every_s in MARK_EVERY_S.items():
            spec = Spec("markPrice", sym, cadence)
            if spec in active and now_s - self.timed.get((sym, cadence), 0.0) >= every_s:
                self.timed[(sym, cadence)] = now_s
                out.setdefault(spec, []).append(json.dumps(frames.mark_price(deps, inst, now_ms)))

    def _all_market(self, spec: Spec, out: dict[Spec, list[str]], now_ms: int, now_s: float) -> None:
        """The array forms: the tickers that changed this tick, every mark price at its cadence."""
        if spec.kind == "markPrice":
            every_s = MARK_EVERY_S[spec.param]
            if now_s - self.timed.get(("", spec.param), 0.0) < every_s:
                return
            self.timed[("", spec.param)] = now_s
            rows = [frames.mark_price(self.deps, i, now_ms) for i in self.by_id.values()]
        else:
            rows = [json.loads(t) for i in self.by_id.values() for t in out.get(Spec(spec.kind, i.symbol), [])]
        if rows:
            out[spec] = [json.dumps(rows)]

    def _changed(self, key: tuple[str, str, str], value: Any) -> bool:
        if self.sent.get(key) == value:
            return False
        self.sent[key] = value
        return True

    def _depth(self, inst: Instrument, wanted: bool, out: dict[Spec, list[str]], now_ms: int) -> None:
        """The next diff of the symbol, (depth_u, seq]; without subscribers the cursor just follows the seq.
        It never moves without a diff sent while anyone subscribes (the next pu must chain)."""
        sym, rm = inst.symbol, self.deps.readmodel
        prev_u = self.depth_u.get(sym)
        if prev_u is None:
            return
        if not wanted:
            self.depth_u[sym] = rm.book_seq(sym)
            return
        found = rm.depth_changes(sym, prev_u)
        if found is None:  # older than the changes kept: break the chain, clients resynchronise
            self.depth_u[sym] = rm.book_seq(sym)
            return
        seq, changes = found
        if changes:
            self.depth_u[sym] = seq
            out.setdefault(Spec("depth", sym), []).append(json.dumps(frames.depth_update(inst, changes, prev_u, seq,
                                                                                          now_ms)))

    def _trades(self, inst: Instrument, active: set[Spec], out: dict[Spec, list[str]], now_ms: int) -> None:
        sym, rm = inst.symbol, self.deps.readmodel
        newest = rm.trades(sym, 1)
        newest_id = newest[-1].trade_id if newest else 0
        last = self.trade_id.get(sym)
        self.trade_id[sym] = newest_id
        if last is None or newest_id <= last:
            return
        want_trade, want_agg = Spec("trade", sym) in active, Spec("aggTrade", sym) in active
        if not (want_trade or want_agg):
            return
        fresh = [t for t in rm.trades(sym, frames.MAX_TRADES_PER_TICK) if t.trade_id > last]
        for t in fresh:
            streamdelay.trade_at("built", t.ts_ms, now_ms)
        self.streamed_ms.extend(t.ts_ms for t in fresh)
        if want_trade:
            out.setdefault(Spec("trade", sym), []).extend(json.dumps(frames.trade(inst, t, now_ms)) for t in fresh)
        if want_agg:
            out.setdefault(Spec("aggTrade", sym), []).extend(json.dumps(frames.agg_trade(inst, t, now_ms))
                                                              for t in fresh)

    # --- user data -----------------------------------------------------------------------------
    def _user_data(self, now_ms: int) -> None:
        """ORDER_TRADE_UPDATE per order change (x=TRADE with the fill that caused it), ACCOUNT_UPDATE per
        command's events that changed a wallet balance or a position."""
        newest, events = self.deps.readmodel.account_feed(max(self.feed_at, 0))
        if self.feed_at < 0:  # the first tick: history is not streamed
            self.feed_at = newest
            return
        self.feed_at = newest
        if events is None:  # this process fell behind the feed: its private sockets must start over
            for conns in list(self.private.values()):
                for conn in list(conns):
                    DROPPED.labels("lagging").inc()
                    conn.ended.set()
            return
        for ev in events:
            if self.group and (self.group[0].account_id, self.group[0].causation_id) != (ev.account_id,
                                                                                        ev.causation_id):
                self._flush(now_ms)
            self.group.append(ev)
            if isinstance(ev, m.FillRecorded):
                self.pending_fills[(ev.account_id, ev.order_id)] = ev
                while len(self.pending_fills) > MAX_PENDING_FILLS:
                    self.pending_fills.popitem(last=False)
            elif isinstance(ev, m.OrderChanged):
                fill = self.pending_fills.pop((ev.account_id, ev.order.order_id), None)
                self._order_update(ev.order, fill, now_ms)
        self._flush(now_ms)

    def _order_update(self, o: m.OrderView, fill: m.FillRecorded | None, now_ms: int) -> None:
        conns = self.private.get(o.account_id)
        inst = load_catalog().get(o.symbol)
        if not conns or inst is None:
            return
        first = o.status == "NEW" and o.created_ms == o.updated_ms
        text = json.dumps(frames.order_trade_update(inst, o, fill, now_ms, first))
        for conn in list(conns):
            self.push(conn, text)

    def _flush(self, now_ms: int) -> None:
        group, self.group = self.group, []
        if not group:
            return
        account = group[0].account_id
        balances: dict[str, m.BalanceChanged] = {}
        positions: dict[str, m.PositionChanged] = {}
        wallet_up = False
        for ev in group:
            if isinstance(ev, m.BalanceChanged):
                before = self.wallets.get((account, ev.asset))
                self.wallets[(account, ev.asset)] = ev.wallet
                if before != ev.wallet:
                    balances[ev.asset] = ev
                    wallet_up = before is None or Decimal(ev.wallet) > Decimal(before)
            elif isinstance(ev, m.PositionChanged):
                positions[ev.symbol] = ev
        conns = self.private.get(account)
        if not conns or not (balances or positions):
            return
        if any(isinstance(ev, (m.FillRecorded, m.PositionChanged)) for ev in group):
            reason = "ORDER"
        elif any(isinstance(ev, m.FundingApplied) for ev in group):
            reason = "FUNDING_FEE"
        else:
            reason = "DEPOSIT" if wallet_up else "WITHDRAW"
        rows = []
        for pos in positions.values():
            inst = load_catalog().get(pos.symbol)
            if inst is not None:
                rows.append(frames.position_entry(self.deps, inst, pos))
        text = json.dumps(frames.account_update(reason, [frames.balance_entry(b) for b in balances.values()], rows,
                                                group[-1].ts_ms, now_ms))
        for conn in list(conns):
            self.push(conn, text)


def _wrapped(name: str, text: str) -> str:
    """A payload in its combined-stream envelope."""
    return '{"stream":' + json.dumps(name) + ',"data":' + text + "}"


def _encoded(fresh: list[tuple[str, list[str]]], i: int, combined: bool, done: dict[tuple[int, bool], bytes]) -> bytes:
    """The websocket frames of one stream's texts of this tick, encoded once per framing."""
    found = done.get((i, combined))
    if found is None:
        name, texts = fresh[i]
        found = done[(i, combined)] = b"".join(ws_frame((_wrapped(name, t) if combined else t).encode())
                                              for t in texts)
    return found


def hub_of(ws: WebSocket) -> Hub:
    hub: Hub = ws.app.state.fstream
    hub.start()
    return hub


# --- sockets --------------------------------------------------------------------------------------


async def _serve(ws: WebSocket, combined: bool, streams: list[str], listen_key: str | None) -> None:
    """Accept, check, then run the connection until it ends (client gone, too slow, key ended, limits)."""
    if not await ratelimit.admit_websocket(ws):
        return
    hub = hub_of(ws)
    conn = Conn(ws, client_ip(ws), combined=combined, transport=server_transport(ws))
    refused = hub.admit(conn)
    if refused is not None:
        await ws.close(code=TRY_AGAIN_LATER, reason=refused)
        return
    try:
        entry = None
        if listen_key is not None:
            entry = hub.keys.attach(listen_key, int(time.time() * 1000))
            if entry is None:
                await ws.close(code=POLICY_VIOLATION, reason="This listenKey does not exist.")
                return
            hub.attach_private(conn, entry)
        if streams:
            try:
                _check_streams(hub, conn, streams)
            except BadStream as err:
                await ws.close(code=POLICY_VIOLATION, reason=err.msg[:100])
                return
        await ws.accept()
        small_send_buffer(server_transport(ws))
        if streams:
            hub.subscribe(conn, streams)
        await _run(ws, conn, hub)
    finally:
        hub.remove(conn)


def _check_streams(hub: Hub, conn: Conn, names: list[str]) -> None:
    if len(conn.streams | set(names)) > MAX_STREAMS_PER_CONNECTION:
        raise BadStream(2, f"Invalid request: at most {MAX_STREAMS_PER_CONNECTION} streams per connection")
    for name in names:
        parse_stream(name, hub.by_id)


async def _run(ws: WebSocket, conn: Conn, hub: Hub) -> None:
    tasks = [asyncio.create_task(_receive(ws, conn, hub)), asyncio.create_task(conn.ended.wait())]
    if conn.transport is None:
        tasks.append(asyncio.create_task(_send(ws, conn)))
    try:
        await asyncio.wait(tasks, timeout=MAX_CONNECTION_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 1.0)


async def _send(ws: WebSocket, conn: Conn) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        while True:
            text = await conn.queue.get()
            if text is None:
                return
            conn.sending_since = time.monotonic()
            await ws.send_text(text)
            conn.sending_since = None


async def _receive(ws: WebSocket, conn: Conn, hub: Hub) -> None:
    """Requests, at most MAX_MESSAGES_PER_S (more closes the connection, as Binance does)."""
    rate = MessageRate()
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            text = await ws.receive_text()
            if not rate.allow(time.monotonic()):
                DROPPED.labels("messages").inc()
                await ws.close(code=POLICY_VIOLATION, reason="too many messages")
                return
            reply = handle_request(hub, conn, text)
            if reply is not None and not hub.send_now(conn, json.dumps(reply)):
                return


def handle_request(hub: Hub, conn: Conn, text: str) -> dict[str, Any] | None:
    """The reply to one client request (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY,
    GET_PROPERTY), Binance's codes for errors: 0 unknown property, 1 bad value type, 2 invalid request,
    3 invalid JSON, -1121 unknown symbol. A refused request changes nothing."""
    if conn.account is not None:
        return None  # a user-data socket takes no requests
    try:
        req = json.loads(text) if len(text) <= MAX_REQUEST_CHARS else None
    except ValueError:
        req = None
    if not isinstance(req, dict):
        return _error(3, "Invalid JSON: expected an object of at most 65536 characters", None)
    rid = req.get("id")
    if not (rid is None or isinstance(rid, str) and len(rid) <= 36 or isinstance(rid, int) and rid >= 0):
        return _error(1, "Invalid value type: id must be an unsigned integer or a short string", None)
    method, params = req.get("method"), req.get("params", [])
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return _error(2, "Invalid request: params must be a list of stream names", rid)
        try:
            _check_streams(hub, conn, params if method == "SUBSCRIBE" else [])
        except BadStream as err:
            return _error(err.code, err.msg, rid)
        (hub.subscribe if method == "SUBSCRIBE" else hub.unsubscribe)(conn, params)
        return {"result": None, "id": rid}
    if method == "LIST_SUBSCRIPTIONS":
        return {"result": sorted(conn.streams), "id": rid}
    if method in ("SET_PROPERTY", "GET_PROPERTY"):
        if not isinstance(params, list) or not params or params[0] != "combined":
            return _error(0, "Unknown property", rid)
        if method == "GET_PROPERTY":
            return {"result": conn.combined, "id": rid}
        if len(params) != 2 or not isinstance(params[1], bool):
            return _error(1, "Invalid value type: expected Boolean", rid)
        conn.combined = params[1]
        return {"result": None, "id": rid}
    return _error(2, "Invalid request: unknown method", rid)


def _error(code: int, msg: str, rid: Any) -> dict[str, Any]:
    return {"error": {"code": code, "msg": msg}, "id": rid}


def _names(raw: str) -> list[str]:
    return [n for n in raw.split("/") if n]


@router.websocket("/public/ws/{slot}")
@router.websocket("/market/ws/{slot}")
async def market_slot(ws: WebSocket, slot: str) -> None:
    """A market-data socket (ccxt.pro's /public and /market with its slot number, which is ignored)."""
    await _serve(ws, False, [], None)


@router.websocket("/public/ws")
@router.websocket("/market/ws")
async def market_plain(ws: WebSocket) -> None:
    await _serve(ws, False, [], None)


@router.websocket("/ws")
async def legacy_plain(ws: WebSocket) -> None:
    await _serve(ws, False, [], None)


@router.websocket("/ws/{path:path}")
async def legacy(ws: WebSocket, path: str) -> None:
    """The older forms: /ws/<slot number>, /ws/<stream>[/<stream>...], /ws/<listenKey>."""
    if path.isdigit():
        await _serve(ws, False, [], None)
    elif "@" in path or path.startswith("!"):
        await _serve(ws, False, _names(path), None)
    else:
        await _serve(ws, False, [], path)


@router.websocket("/private/ws")
async def private(ws: WebSocket, listenKey: str = "") -> None:  # noqa: N803 (Binance's parameter name)
    await _serve(ws, False, [], listenKey)


@router.websocket("/stream")
@router.websocket("/public/stream")
@router.websocket("/market/stream")
async def combined(ws: WebSocket, streams: str = "") -> None:
    """Combined streams: ?streams=a/b/c, each frame {"stream": <name>, "data": <payload>}."""
    await _serve(ws, True, _names(streams), None)
