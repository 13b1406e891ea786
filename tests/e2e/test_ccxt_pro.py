"""ccxt.pro's binanceusdm against the local stack's Binance USD-M streams (shared/BINANCE_USDM_WS.md),
configured as the README tells users: the book, trades, ticker, candles and mark price follow REST
writes; one account's order rests, fills against another's, and the private watchers report exactly
what REST then returns. Then a raw websocket client checks the depth chain, the error replies, a bad
listenKey."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import ccxt
import ccxt.pro as ccxtpro
import httpx
import pytest
import wsproto
import wsproto.events
from stackutil import Stack, admin, running_stack

pytestmark = pytest.mark.e2e
SYM = "BTC/USDT:USDT"
WAIT_S = 15.0
SLOW_DROP_S = 30.0  # a socket that reads nothing is cut well before this


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def users(stack: Stack) -> dict[str, dict[str, Any]]:
    found = {}
    for name in ("alice", "bob", "carol"):
        keys = admin(stack, "create-user", "--label", name, "--deposit", "USDT=10000")
        assert isinstance(keys, dict)
        found[name] = keys
    return found


def _options() -> dict[str, Any]:
    return {"fetchCurrencies": False, "fetchMarkets": {"types": ["linear"]}, "adjustForTimeDifference": False,
            "fetchOpenOrders": {"warnWithoutSymbol": False}}


def _urls(base: str) -> dict[str, Any]:
    rest = {k: base + p for k, p in {"fapiPublic": "/fapi/v1", "fapiPublicV2": "/fapi/v2", "fapiPublicV3": "/fapi/v3",
                                     "fapiPrivate": "/fapi/v1", "fapiPrivateV2": "/fapi/v2",
                                     "fapiPrivateV3": "/fapi/v3", "fapiData": "/futures/data"}.items()}
    return {**rest, "ws": {"linear": base.replace("http://", "ws://") + "/fstream/ws"}}


def rest_client(base: str, keys: dict[str, Any]) -> Any:
    ex = ccxt.binanceusdm({"apiKey": keys["api_key"], "secret": keys["api_secret"], "options": _options()})
    ex.urls["api"] = {k: v for k, v in _urls(base).items() if k != "ws"}
    ex.exceptions["exact"] = {**ex.exceptions["exact"], **ex.exceptions["linear"]["exact"]}
    return ex


def pro_client(base: str, keys: dict[str, Any]) -> Any:
    ex = ccxtpro.binanceusdm({"apiKey": keys["api_key"], "secret": keys["api_secret"], "options": _options()})
    ex.urls["api"] = _urls(base)
    ex.exceptions["exact"] = {**ex.exceptions["exact"], **ex.exceptions["linear"]["exact"]}
    return ex


def _levels(side: list[list[Any]]) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q, *_ in side]


async def _book_converges(pro: Any, rest: Any) -> None:
    """The watched book (ccxt's local copy, kept by the diffs) comes to equal the REST book."""
    deadline = time.monotonic() + WAIT_S
    while True:
        watched = pro.orderbooks[SYM]
        fetched = await asyncio.to_thread(rest.fetch_order_book, SYM)
        if (_levels(watched["bids"]), _levels(watched["asks"])) == (_levels(fetched["bids"]), _levels(fetched["asks"])):
            return
        assert time.monotonic() < deadline, (watched["bids"][:3], watched["asks"][:3], fetched)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pro.watch_order_book(SYM), 0.5)


async def _clients(stack: Stack, users: dict[str, dict[str, Any]], pro_user: str,
                   *rest_users: str) -> tuple[Any, list[Any]]:
    """A ccxt.pro client of `pro_user` and a ccxt REST client per name in `rest_users`, markets loaded."""
    pro = pro_client(stack.api, users[pro_user])
    rests = [rest_client(stack.api, users[name]) for name in rest_users]
    await pro.load_markets()
    for rest in rests:
        await asyncio.to_thread(rest.load_markets)
    return pro, rests


def test_market_watchers_follow_rest(stack: Stack, users: dict[str, dict[str, Any]]) -> None:
    asyncio.run(_market(stack, users))


async def _market(stack: Stack, users: dict[str, dict[str, Any]]) -> None:
    pro, (alice, bob) = await _clients(stack, users, "carol", "alice", "bob")
    try:
        await asyncio.wait_for(pro.watch_order_book(SYM), WAIT_S)
        resting = [await asyncio.to_thread(alice.create_order, SYM, "limit", "sell", 0.01, 50000 + i * 10)
                   for i in range(3)]
        await asyncio.to_thread(bob.create_order, SYM, "limit", "buy", 0.005, 49900)
        await _book_converges(pro, alice)
        await asyncio.to_thread(alice.cancel_order, resting[1]["id"], SYM)
        await _book_converges(pro, alice)

        await asyncio.wait_for(pro.watch_ticker(SYM), WAIT_S)  # the first frame: the state when subscribed
        watchers = {"trades": pro.watch_trades(SYM), "ticker": pro.watch_ticker(SYM),
                    "ohlcv": pro.watch_ohlcv(SYM, "1m"), "mark": pro.watch_mark_price(SYM)}
        tasks = {k: asyncio.create_task(w) for k, w in watchers.items()}
        await asyncio.sleep(1.0)  # subscribed before the trade
        await asyncio.to_thread(bob.create_order, SYM, "market", "buy", 0.004)
        (trade,) = [t for t in await asyncio.wait_for(tasks["trades"], WAIT_S) if t["amount"] == 0.004]
        (public,) = [t for t in await asyncio.to_thread(bob.fetch_trades, SYM) if t["id"] == trade["id"]]
        assert (trade["price"], trade["side"], trade["timestamp"]) == (public["price"], "buy", public["timestamp"]) \
            == (50000, "buy", public["timestamp"])
        ticker = await asyncio.wait_for(tasks["ticker"], WAIT_S)
        assert ticker["last"] == (await asyncio.to_thread(bob.fetch_ticker, SYM))["last"] == 50000
        candles = await asyncio.wait_for(tasks["ohlcv"], WAIT_S)
        rest_candles = await asyncio.to_thread(bob.fetch_ohlcv, SYM, "1m")
        assert candles[-1][4] == 50000 and candles[-1][0] == rest_candles[-1][0]
        mark = await asyncio.wait_for(tasks["mark"], WAIT_S)
        assert mark["symbol"] == SYM and mark["markPrice"] and mark["markPrice"] > 0
        await _book_converges(pro, alice)
    finally:
        await pro.close()


def test_private_watchers_report_what_rest_returns(stack: Stack, users: dict[str, dict[str, Any]]) -> None:
    asyncio.run(_private(stack, users))


async def _private(stack: Stack, users: dict[str, dict[str, Any]]) -> None:
    pro, (rest, bob) = await _clients(stack, users, "carol", "carol", "bob")
    try:
        for other in ("alice", "bob"):  # an empty book: the fill below is between carol and bob only
            await asyncio.to_thread(rest_client(stack.api, users[other]).cancel_all_orders, SYM)
        orders_task = asyncio.create_task(pro.watch_orders(SYM))
        await asyncio.sleep(1.5)  # the listenKey taken and the private socket open
        placed = await asyncio.to_thread(rest.create_order, SYM, "limit", "buy", 0.01, 49000)
        (seen,) = await asyncio.wait_for(orders_task, WAIT_S)
        assert (seen["id"], seen["status"], seen["price"], seen["amount"], seen["filled"]) == (
            placed["id"], "open", 49000, 0.01, 0)

        tasks = {"trades": asyncio.create_task(pro.watch_my_trades(SYM)),
                 "balance": asyncio.create_task(pro.watch_balance()),
                 "positions": asyncio.create_task(pro.watch_positions([SYM])),
                 "orders": asyncio.create_task(pro.watch_orders(SYM))}
        await asyncio.sleep(0.5)
        await asyncio.to_thread(bob.create_order, SYM, "limit", "sell", 0.004, 49000)
        (fill,) = await asyncio.wait_for(tasks["trades"], WAIT_S)
        (rest_fill,) = await asyncio.to_thread(rest.fetch_my_trades, SYM)
        for k in ("id", "order", "price", "amount", "side", "takerOrMaker", "timestamp"):
            assert fill[k] == rest_fill[k], k
        assert fill["fee"]["cost"] == rest_fill["fee"]["cost"] and fill["takerOrMaker"] == "maker"
        order = (await asyncio.wait_for(tasks["orders"], WAIT_S))[-1]
        rest_order = await asyncio.to_thread(rest.fetch_order, placed["id"], SYM)
        assert (order["status"], order["filled"], order["remaining"], order["average"]) == (
            rest_order["status"], rest_order["filled"], rest_order["remaining"], rest_order["average"]) == (
            "open", 0.004, 0.006, 49000)
        balance = await asyncio.wait_for(tasks["balance"], WAIT_S)
        (rest_balance,) = [b for b in await asyncio.to_thread(rest.fapiPrivateV2GetBalance) if b["asset"] == "USDT"]
        assert balance["USDT"]["total"] == float(rest_balance["balance"]) < 10000  # the maker fee
        (position,) = await asyncio.wait_for(tasks["positions"], WAIT_S)
        (rest_position,) = await asyncio.to_thread(rest.fetch_positions, [SYM])
        for k in ("symbol", "side", "contracts", "entryPrice"):
            assert position[k] == rest_position[k], k
        assert (position["side"], position["contracts"]) == ("long", 0.004)
    finally:
        await pro.close()


def _ws(stack: Stack) -> str:
    return stack.api.replace("http://", "ws://") + "/fstream"


def test_raw_socket_depth_chain_errors_and_keys(stack: Stack, users: dict[str, dict[str, Any]]) -> None:
    asyncio.run(_raw(stack, users))


async def _raw(stack: Stack, users: dict[str, dict[str, Any]]) -> None:
    alice = rest_client(stack.api, users["alice"])
    await asyncio.to_thread(alice.load_markets)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(_ws(stack) + "/public/ws/0")
        await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms", "nosuch@trade"], "id": 7})
        assert await ws.receive_json(timeout=WAIT_S) == {"error": {"code": -1121, "msg": "Invalid symbol."}, "id": 7}
        await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@nosuchstream"], "id": 8})
        reply = await ws.receive_json(timeout=WAIT_S)
        assert reply["id"] == 8 and reply["error"]["code"] == 2
        await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 9})
        assert await ws.receive_json(timeout=WAIT_S) == {"result": None, "id": 9}  # still open after the errors
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 10})
        for _ in range(6):
            placed = await asyncio.to_thread(alice.create_order, SYM, "limit", "sell", 0.002, 51000)
            await asyncio.to_thread(alice.cancel_order, placed["id"], SYM)
        frames, listed = [], None
        deadline = time.monotonic() + WAIT_S
        while len(frames) < 12 and time.monotonic() < deadline:
            msg = await ws.receive_json(timeout=WAIT_S)
            if msg.get("id") == 10:
                listed = msg["result"]
            elif msg.get("e") == "depthUpdate":
                frames.append(msg)
        assert listed == ["btcusdt@depth@100ms"]
        assert len(frames) >= 2 and all(f["U"] == f["pu"] + 1 <= f["u"] for f in frames)
        assert all(b["pu"] == a["u"] for a, b in zip(frames, frames[1:], strict=False))
        rest_book = httpx.get(stack.api + "/fapi/v1/depth", params={"symbol": "BTCUSDT"}).json()
        assert rest_book["lastUpdateId"] >= frames[-1]["u"]
        await ws.close()

        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(_ws(stack) + "/private/ws?listenKey=not-a-key")
        headers = {"X-MBX-APIKEY": users["alice"]["api_key"]}
        key = httpx.post(stack.api + "/fapi/v1/listenKey", headers=headers).json()["listenKey"]
        assert httpx.post(stack.api + "/fapi/v1/listenKey", headers=headers).json()["listenKey"] == key
        assert httpx.put(stack.api + "/fapi/v1/listenKey", headers=headers).json()["listenKey"] == key
        private = await http.ws_connect(_ws(stack) + f"/private/ws?listenKey={key}")
        assert httpx.delete(stack.api + "/fapi/v1/listenKey", headers=headers).json() == {}
        ended = await private.receive_json(timeout=WAIT_S)
        assert ended["e"] == "listenKeyExpired" and ended["listenKey"] == key
        gone = httpx.put(stack.api + "/fapi/v1/listenKey", headers=headers)
        assert gone.status_code == 400 and gone.json()["code"] == -1125


class NeverReads:
    """A websocket client that completes the handshake, then never reads: its receive buffer is kept
    small so the server's side fills soon."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setblocking(False)
        self.client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)

    async def connect(self, api: str, path: str) -> None:
        where = urlsplit(api)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, (where.hostname, where.port))
        await loop.sock_sendall(self.sock, self.client.send(wsproto.events.Request(host=where.netloc, target=path)))
        head = b""
        while not head.endswith(b"\r\n\r\n"):  # the answer's head only, byte by byte: no frame is read
            head += await loop.sock_recv(self.sock, 1)
        self.client.receive_data(head)
        assert [type(e) for e in self.client.events()] == [wsproto.events.AcceptConnection], head

    async def send(self, request: dict[str, Any]) -> None:
        data = self.client.send(wsproto.events.TextMessage(json.dumps(request)))
        await asyncio.get_running_loop().sock_sendall(self.sock, data)


def test_a_client_that_never_reads_is_dropped_while_another_keeps_up(
        stack: Stack, users: dict[str, dict[str, Any]]) -> None:
    asyncio.run(_slow(stack, users))


async def _slow(stack: Stack, users: dict[str, dict[str, Any]]) -> None:
    """The slow socket asks for big replies (LIST_SUBSCRIPTIONS of every stream of every symbol) and
    reads nothing; the server must cut it within SLOW_DROP_S while a reading client's trade frames keep
    arriving within a second of the matcher's trade time."""
    alice, bob = rest_client(stack.api, users["alice"]), rest_client(stack.api, users["bob"])
    await asyncio.to_thread(alice.load_markets)
    await asyncio.to_thread(bob.load_markets)
    names = [f"{s}@{k}" for s in ("btcusdt", "ethusdt") for k in (
        "depth", "depth@100ms", "depth@500ms", "trade", "aggTrade", "miniTicker", "ticker", "bookTicker",
        "markPrice", "markPrice@1s", *(f"kline_{i}" for i in ("1m", "3m", "5m", "15m", "30m", "1h", "4h", "1d")))]
    slow = NeverReads()
    await slow.connect(stack.api, "/fstream/public/ws/0")
    await slow.send({"method": "SUBSCRIBE", "params": names, "id": 1})
    delays_ms: list[int] = []
    async with aiohttp.ClientSession() as http:
        fast = await http.ws_connect(_ws(stack) + "/ws/btcusdt@trade")
        dropped_after_s = None
        started = time.monotonic()
        k = 0
        while time.monotonic() - started < SLOW_DROP_S:
            k += 1
            try:
                for _ in range(8):  # under the 10 messages per second limit
                    await slow.send({"method": "LIST_SUBSCRIPTIONS", "id": k})
            except OSError:  # reset by the server
                dropped_after_s = time.monotonic() - started
                break
            await asyncio.to_thread(alice.create_order, SYM, "limit", "sell", 0.004, 50000)
            await asyncio.to_thread(bob.create_order, SYM, "market", "buy", 0.004)
            frame = await fast.receive_json(timeout=WAIT_S)
            with contextlib.suppress(TimeoutError):
                while True:  # this round's frames (a taker may fill more than one maker)
                    delays_ms.append(int(time.time() * 1000) - frame["T"])
                    frame = await fast.receive_json(timeout=0.3)
            await asyncio.sleep(max(0.0, k - (time.monotonic() - started)))
        await fast.close()
    slow.sock.close()
    assert dropped_after_s is not None, f"a client that never reads was still connected after {SLOW_DROP_S} s"
    assert delays_ms and max(delays_ms) < 1000, delays_ms
