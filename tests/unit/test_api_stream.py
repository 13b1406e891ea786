"""The market-data websocket (perpline.api.stream) through the ASGI app, over a read model stub: a frame
on connect in the REST shapes, a new frame when the book moves, refusals for bad parameters."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from perpline.api import stream
from perpline.api.app import ApiDeps, create_app
from perpline.contracts import messages as m

SYM = "BTCUSDT-PERP"


class Book:
    """What the stream reads of the read model."""

    def __init__(self) -> None:
        self.seq, self.bids, self.asks = 7, [("49990.00", 1500)], [("50010.00", 250)]
        self.recent = [m.Trade(trace_id="", causation_id="", ts_ms=1, symbol=SYM, seq=5, trade_id=3, price="50000.00",
                               quantity="0.100", taker_side="BUY", taker_order_id=1, taker_account_id=1, taker_leaves="0",
                               maker_order_id=2, maker_account_id=2, maker_leaves="0")]

    def depth_at(self, symbol: str, limit: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
        return self.seq, self.bids[:limit], self.asks[:limit]

    def trades(self, symbol: str, limit: int) -> list[m.Trade]:
        return self.recent[-limit:]

    def mark(self, symbol: str) -> m.MarkPrice | None:
        return None


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, Book]:
    monkeypatch.setattr(stream, "PUSH_INTERVAL_S", 0.01)
    deps = ApiDeps(bootstrap="unused:1", topics={}, wait_s=0.1)
    book = Book()
    deps.readmodel = book  # type: ignore[assignment]
    return TestClient(create_app(deps)), book  # no lifespan: no broker


def test_a_frame_on_connect_and_another_when_the_book_moves(client: tuple[TestClient, Book]) -> None:
    tc, book = client
    with tc.websocket_connect(f"/api/v1/market/stream?symbol={SYM}&levels=5&trades=3") as ws:
        first: dict[str, Any] = ws.receive_json()
        assert (first["type"], first["symbol"], first["seq"], first["mark"]) == ("market", SYM, 7, None)
        assert first["bids"] == [["49990.00", "1.500"]] and first["asks"] == [["50010.00", "0.250"]]
        assert [(t["trade_id"], t["price"], t["taker_side"]) for t in first["trades"]] == [(3, "50000.00", "BUY")]
        book.seq, book.bids = 8, []  # the bid was taken
        moved = ws.receive_json()
        assert (moved["seq"], moved["bids"]) == (8, [])


@pytest.mark.parametrize("query", ["symbol=NOPE", f"symbol={SYM}&levels=0", f"symbol={SYM}&trades=101", ""])
def test_bad_parameters_are_refused_with_a_policy_close(client: tuple[TestClient, Book], query: str) -> None:
    tc, _ = client
    with pytest.raises(WebSocketDisconnect) as refused, tc.websocket_connect(f"/api/v1/market/stream?{query}") as ws:
        ws.receive_json()
    assert refused.value.code == stream.POLICY_VIOLATION


def test_streams_beyond_the_limit_are_told_to_come_back(client: tuple[TestClient, Book],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    tc, _ = client
    monkeypatch.setattr(stream, "MAX_STREAMS", 0)
    with pytest.raises(WebSocketDisconnect) as refused, tc.websocket_connect(f"/api/v1/market/stream?symbol={SYM}") as ws:
        ws.receive_json()
    assert refused.value.code == stream.TRY_AGAIN_LATER


class Accounts(Book):
    """Adds what the account stream reads: one account's view."""

    def __init__(self) -> None:
        super().__init__()
        from perpline.api.reads.accounts import AccountViews  # noqa: PLC0415

        self.accounts = AccountViews()

    def mark_ticks(self, symbol: str) -> int:
        return 0


def test_the_account_stream_wants_a_live_session(client: tuple[TestClient, Book], monkeypatch: pytest.MonkeyPatch) -> None:
    tc, _ = client
    with pytest.raises(WebSocketDisconnect) as refused, tc.websocket_connect("/api/v1/account/stream") as ws:
        ws.send_json({"token": "not-a-token"})
        ws.receive_json()
    assert refused.value.code == stream.UNAUTHORIZED


def test_the_account_stream_pushes_changes_and_ends_with_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    from perpline.api.service import sessions as api_sessions  # noqa: PLC0415
    from perpline.auth.sessions import Claims  # noqa: PLC0415

    monkeypatch.setattr(stream, "PUSH_INTERVAL_S", 0.01)
    live = {"on": True}

    async def claims(_deps: Any, token: str) -> Claims:
        assert token == "good"
        return Claims(user_id=42, session_id="s", expires_s=2**40)

    monkeypatch.setattr(api_sessions, "token_claims", claims)
    monkeypatch.setattr(api_sessions, "session_live", lambda _deps, _claims: live["on"])
    deps = ApiDeps(bootstrap="unused:1", topics={}, wait_s=0.1)
    accounts = Accounts()
    deps.readmodel = accounts  # type: ignore[assignment]
    with TestClient(create_app(deps)).websocket_connect("/api/v1/account/stream") as ws:
        ws.send_json({"token": "good"})
        first = ws.receive_json()
        assert (first["type"], first["balances"], first["positions"], first["open_orders"]) == ("account", [], [], [])
        accounts.accounts.apply(m.BalanceChanged(
            trace_id="", causation_id="", ts_ms=1, account_id=42, asset="USDT", available="10.00000000",
            order_margin="0.00000000", position_margin="0.00000000", wallet="10.00000000", version=1))
        moved = ws.receive_json()
        assert [(b["asset"], b["available"]) for b in moved["balances"]] == [("USDT", "10.00000000")]
        live["on"] = False  # logout
        with pytest.raises(WebSocketDisconnect) as ended:
            while True:
                ws.receive_json()
        assert ended.value.code == stream.UNAUTHORIZED


def test_a_market_frame_is_built_once_per_tick_for_every_subscriber() -> None:
    """Issue 18: a frame per (symbol, levels, trades) per push tick, shared (the same encoded text) by every
    connection asking within the tick; the next tick builds a new one; other parameters, their own."""
    now = [100.0]
    cache = stream.FrameCache(clock=lambda: now[0])
    built: list[int] = []

    def build() -> dict[str, Any]:
        built.append(1)
        return {"type": "market", "n": len(built)}

    first = [cache.get((SYM, 10, 16), build) for _ in range(1000)]  # a thousand subscribers in one tick
    assert len(built) == 1 and all(f is first[0] for f in first) and first[0][1] == '{"type":"market","n":1}'
    cache.get((SYM, 5, 16), build)
    assert len(built) == 2  # other parameters: another frame
    now[0] += stream.PUSH_INTERVAL_S
    assert cache.get((SYM, 10, 16), build)[0]["n"] == 3  # the next tick: built again
