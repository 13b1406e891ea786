"""The Binance streams' hub (perpline.api.fstream) without a server: slow clients are cut while the
others keep getting every frame, and Binance's limits (connections per address, streams per
connection, incoming messages per second, keepalive). Sockets are fakes with a transport's interface."""

from __future__ import annotations

import json
from typing import Any

import pytest

from perpline.api import fstream
from perpline.api.listenkey import ListenKeys

SYM = "BTCUSDT-PERP"


class Book:
    """What the hub reads of the read model: a book whose level moves at every tick."""

    def __init__(self) -> None:
        self.seq = 10

    def book_seq(self, symbol: str) -> int:
        return self.seq if symbol == SYM else 0

    def depth_changes(self, symbol: str, after_seq: int) -> tuple[int, list[tuple[int, str, str, int]]]:
        if symbol != SYM:
            return 0, []
        return self.seq, [(self.seq, "BUY", "50000.0", self.seq * 1000)] if self.seq > after_seq else []

    def trades(self, symbol: str, limit: int) -> list[Any]:
        return []

    def account_feed(self, after: int) -> tuple[int, list[Any]]:
        return 0, []


class Deps:
    def __init__(self) -> None:
        self.readmodel = Book()


class Transport:
    """A transport whose peer takes `drain_bytes` per write (None: all of it; 0: nothing)."""

    def __init__(self, drain_bytes: int | None) -> None:
        self.drain_bytes, self.unsent, self.frames, self.aborted = drain_bytes, 0, b"", False

    def write(self, data: bytes) -> None:
        self.frames += data
        self.unsent = 0 if self.drain_bytes is None else max(0, self.unsent + len(data) - self.drain_bytes)

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


def texts(stream: bytes) -> list[dict[str, Any]]:
    """The payloads of unmasked text frames as a server writes them."""
    found, i = [], 0
    while i < len(stream):
        assert stream[i] == 0x81
        size, i = stream[i + 1], i + 2
        if size == 126:
            size, i = int.from_bytes(stream[i:i + 2], "big"), i + 2
        elif size == 127:
            size, i = int.from_bytes(stream[i:i + 8], "big"), i + 8
        found.append(json.loads(stream[i:i + size]))
        i += size
    return found


@pytest.fixture
def hub() -> fstream.Hub:
    return fstream.Hub(Deps(), ListenKeys())


def connect(hub: fstream.Hub, transport: Any, ip: str = "10.0.0.1") -> fstream.Conn:
    conn = fstream.Conn(ws=None, ip=ip, transport=transport)  # type: ignore[arg-type]
    assert hub.admit(conn) is None
    return conn


def test_frame_encoding_covers_every_length() -> None:
    for size in (0, 125, 126, 65535, 65536):
        payload = json.dumps("x" * size).encode()
        assert texts(fstream.ws_frame(payload)) == ["x" * size]


def test_a_client_that_takes_nothing_is_cut_while_the_others_get_every_frame(hub: fstream.Hub) -> None:
    fast_io, slow_io = Transport(None), Transport(0)
    fast, slow = connect(hub, fast_io), connect(hub, slow_io)
    for conn in (fast, slow):
        hub.subscribe(conn, ["btcusdt@depth@100ms"])
    ticks = int((fstream.MAX_LAG_S + 1) / fstream.TICK_S)
    for n in range(ticks):
        hub.deps.readmodel.seq += 1
        hub.tick(1_000_000 + n * 100, n * fstream.TICK_S)
    assert slow_io.aborted and slow.ended.is_set() and hub.subs["btcusdt@depth@100ms"] == {fast}
    cut_at = len(texts(slow_io.frames))
    assert fstream.MAX_LAG_S / fstream.TICK_S - 2 <= cut_at <= fstream.MAX_LAG_S / fstream.TICK_S + 2
    got = texts(fast_io.frames)
    assert not fast_io.aborted and len(got) == ticks
    assert [f["u"] for f in got] == list(range(11, 11 + ticks))
    assert all(b["pu"] == a["u"] for a, b in zip(got, got[1:], strict=False))


def test_a_client_behind_by_less_than_the_lag_limit_stays(hub: fstream.Hub) -> None:
    """A reader slower than the feed for a moment (a backlog that clears) is not cut."""
    io = Transport(10)
    conn = connect(hub, io)
    hub.subscribe(conn, ["btcusdt@depth"])
    for n in range(20):
        hub.deps.readmodel.seq += 1
        hub.tick(1_000_000 + n * 100, n * fstream.TICK_S)
    io.drain_bytes, io.unsent = None, 0
    for n in range(20, 20 + int(2 * fstream.MAX_LAG_S / fstream.TICK_S)):
        hub.deps.readmodel.seq += 1
        hub.tick(1_000_000 + n * 100, n * fstream.TICK_S)
    assert not io.aborted and not conn.ended.is_set() and not conn.marks


def test_a_client_holding_too_many_bytes_is_cut_at_once(hub: fstream.Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fstream, "MAX_BUFFERED_BYTES", 250)  # a depth diff here: about 150 bytes
    io = Transport(0)
    conn = connect(hub, io)
    hub.subscribe(conn, ["btcusdt@depth"])
    hub.deps.readmodel.seq += 1
    hub.tick(1_000_000, 0.0)
    assert not io.aborted
    hub.deps.readmodel.seq += 1
    hub.tick(1_000_100, 0.1)
    assert io.aborted and conn.ended.is_set()


def test_connections_per_address(hub: fstream.Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERPLINE_FSTREAM_CONNECTIONS_PER_IP", "2")
    first, _ = connect(hub, None), connect(hub, None)
    third = fstream.Conn(ws=None, ip="10.0.0.1")  # type: ignore[arg-type]
    assert hub.admit(third) == "too many stream connections from this address"
    connect(hub, None, ip="10.0.0.2")  # another address has its own count
    hub.remove(first)
    assert hub.admit(third) is None


def test_streams_per_connection(hub: fstream.Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fstream, "MAX_STREAMS_PER_CONNECTION", 3)
    conn = connect(hub, None)

    def ask(method: str, params: list[str]) -> dict[str, Any] | None:
        return fstream.handle_request(hub, conn, json.dumps({"method": method, "params": params, "id": 5}))

    assert ask("SUBSCRIBE", ["btcusdt@trade", "btcusdt@depth", "ethusdt@trade"]) == {"result": None, "id": 5}
    assert ask("SUBSCRIBE", ["btcusdt@trade"]) == {"result": None, "id": 5}  # already counted
    refused = ask("SUBSCRIBE", ["ethusdt@depth"])
    assert refused is not None and refused["error"]["code"] == 2 and "at most 3 streams" in refused["error"]["msg"]
    assert conn.streams == {"btcusdt@trade", "btcusdt@depth", "ethusdt@trade"}  # a refusal changes nothing
    assert ask("UNSUBSCRIBE", ["btcusdt@trade"]) == {"result": None, "id": 5}
    assert ask("SUBSCRIBE", ["ethusdt@depth"]) == {"result": None, "id": 5}


def test_incoming_messages_per_second() -> None:
    rate = fstream.MessageRate()
    assert all(rate.allow(100.0 + i / 100) for i in range(fstream.MAX_MESSAGES_PER_S))
    assert not rate.allow(100.5)
    assert rate.allow(101.0)  # a new second


def test_keepalive_is_binances(monkeypatch: pytest.MonkeyPatch) -> None:
    """A control ping every 3 minutes, a connection without a pong for 10 minutes closed, connections
    closed after 24 hours; the API process hands the keepalive to uvicorn."""
    assert fstream.uvicorn_ws_options() == {"ws_ping_interval": 180.0, "ws_ping_timeout": 600.0}
    assert fstream.MAX_CONNECTION_S == 24 * 3600
    import uvicorn  # noqa: PLC0415

    from perpline.api import main  # noqa: PLC0415

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    monkeypatch.setattr(main, "start_read_model", lambda *args: (None, None))  # no broker here
    main.main(["--port", "0"])
    assert (seen["ws_ping_interval"], seen["ws_ping_timeout"]) == (180.0, 600.0)
