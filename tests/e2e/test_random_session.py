"""A seeded random trading session through /fapi, compared step by step with an independent model,
while the matcher, the accounts processor, clearing and the ledger sink are SIGKILLed in the middle of it.

The model is the naive reference book (perpline.matcher.naive: linear scans, written apart from the
core) plus plain Decimal bookkeeping of positions from the fills. Every order's outcome (status,
executed quantity, Binance rejection) must equal the model's; at the end: open orders, positions,
wallets = deposit - fees + realised PnL, long == short open interest, and in ClickHouse every journal
sums to zero and FEE_REVENUE equals the fees charged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from stackutil import Stack, admin, kill_component, running_stack

from perpline.ch.client import get_client
from perpline.matcher.loader import load_core
from perpline.matcher.naive import NaiveBook

pytestmark = pytest.mark.e2e
C: Any = load_core(pure=True)
STEPS = int(os.environ.get("PERPLINE_RANDOM_SESSION_STEPS", "120"))
USERS = 3
TICK = Decimal("0.1")
LOT = Decimal("0.001")
KILL_EVERY = int(os.environ.get("PERPLINE_RANDOM_SESSION_KILL_EVERY", "40"))
VICTIMS = ("perpline.matcher.runner", "perpline.pipelines.accounts", "perpline.pipelines.clearing",
           "perpline.pipelines.ledger_sink")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory)


class Client:
    def __init__(self, api: str, keys: dict[str, Any]) -> None:
        self.api, self.keys, self.user_id = api, keys, int(keys["user_id"])

    def native(self, path: str, body: dict[str, Any], key: str) -> httpx.Response:
        """A signed native POST (query: timestamp + signature over query + JSON body), with a fixed
        Idempotency-Key so a retry after a kill is the same request."""
        raw = json.dumps(body)
        query = urlencode({"timestamp": int(time.time() * 1000), "recvWindow": 10000})
        signature = hmac.new(self.keys["api_secret"].encode(), (query + raw).encode(), hashlib.sha256).hexdigest()
        headers = {"X-MBX-APIKEY": self.keys["api_key"], "Content-Type": "application/json", "Idempotency-Key": key}
        response: httpx.Response | None = None
        for _ in range(60):
            try:
                response = httpx.post(f"{self.api}{path}?{query}&signature={signature}", content=raw, headers=headers,
                                      timeout=30)
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            if response.status_code in (200, 400):
                return response
            time.sleep(0.5)  # 202: no decision yet (a kill): resend the same request
            query = urlencode({"timestamp": int(time.time() * 1000), "recvWindow": 10000})
            signature = hmac.new(self.keys["api_secret"].encode(), (query + raw).encode(), hashlib.sha256).hexdigest()
        raise AssertionError(f"no answer for {key}: {response.text if response is not None else 'unreachable'}")

    def call(self, method: str, path: str, params: dict[str, Any]) -> httpx.Response:
        text = urlencode({**params, "timestamp": int(time.time() * 1000), "recvWindow": 10000})
        text += "&signature=" + hmac.new(self.keys["api_secret"].encode(), text.encode(), hashlib.sha256).hexdigest()
        headers = {"X-MBX-APIKEY": self.keys["api_key"]}
        for _ in range(60):  # a restarting component may make the API time out: retry (signatures are fresh)
            try:
                if method in ("POST", "PUT"):
                    return httpx.request(method, self.api + path, content=text, timeout=30,
                                         headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
                return httpx.request(method, f"{self.api}{path}?{text}", headers=headers, timeout=30)
            except httpx.TransportError:
                time.sleep(0.5)
        raise AssertionError("API unreachable")


def _kill_one(stack: Stack, rng: random.Random) -> str:
    return kill_component(stack, rng.choice(VICTIMS))


class Model:
    """The independent expectation: the naive book, and positions/fees from its trades."""

    def __init__(self) -> None:
        self.book = NaiveBook("BTCUSDT-PERP", C.EngineConfig())
        self.position_lots: dict[int, int] = {}
        self.filled: dict[int, int] = {}  # order id -> filled lots
        self.qty: dict[int, int] = {}
        self.reduce_reserved: dict[int, dict[int, tuple[str, int]]] = {}  # account -> order -> (side, leaves)

    def closable(self, acct: int, side: str) -> int:
        size = self.position_lots.get(acct, 0)
        room = max(size, 0) if side == "SELL" else max(-size, 0)
        return room - sum(n for s, n in self.reduce_reserved.get(acct, {}).values() if s == side)

    def place(self, order_id: int, acct: int, side: str, kind: str, tif: str, price_ticks: int, qty_lots: int,
              ts: int) -> tuple[str, int, int | None]:
        """(status, executed lots, Binance error code or None)."""
        engine_side = C.SIDE_BUY if side == "BUY" else C.SIDE_SELL
        limit_ticks = price_ticks
        engine_tif = {"GTC": C.TIF_GTC, "IOC": C.TIF_IOC, "FOK": C.TIF_FOK, "GTX": C.TIF_GTX}[tif]
        if kind == "MARKET":
            best = self.book.best_ask() if side == "BUY" else self.book.best_bid()
            if best == 0:
                return "REJECTED", 0, -2010
            limit_ticks = best * 105 // 100 if side == "BUY" else -((-best * 95) // 100)
            engine_tif = C.TIF_FOK if tif == "FOK" else C.TIF_IOC
        events = self.book.place(order_id, acct, engine_side, C.TYPE_LIMIT, engine_tif, limit_ticks, qty_lots, -1,
                                 False, "", ts)
        self.qty[order_id] = qty_lots
        filled, status, error = 0, "NEW", None
        for ev in events:
            if ev.kind == C.EV_TRADE:
                filled += ev.qty_lots
                self._trade(ev)
            elif ev.kind == C.EV_REJECTED:
                status, error = "REJECTED", -5022 if ev.code == C.R_POST_ONLY_WOULD_TAKE else None
            elif ev.kind == C.EV_EXPIRED and ev.order_id == order_id:
                status = "EXPIRED"
                if ev.code == C.R_FOK_NOT_FILLABLE:
                    error = -5021
            elif ev.kind == C.EV_EXPIRED:
                self._maker_fill(ev.account_id, ev.order_id, 0)
        if status == "NEW" and filled == qty_lots:
            status = "FILLED"
        elif status == "NEW" and filled:
            status = "PARTIALLY_FILLED"
        return status, filled, error

    def _trade(self, ev: Any) -> None:
        self._fill(ev.account_id, ev.side, ev.qty_lots)
        self._fill(ev.maker_account_id, C.SIDE_SELL if ev.side == C.SIDE_BUY else C.SIDE_BUY, ev.qty_lots)
        self._maker_fill(ev.maker_account_id, ev.maker_order_id, ev.maker_leaves_lots)
        for oid in (ev.order_id, ev.maker_order_id):
            self.filled[oid] = self.filled.get(oid, 0) + ev.qty_lots

    def amend(self, order_id: int, acct: int, price_ticks: int, qty_lots: int, ts: int) -> tuple[str, int, bool]:
        """(status, executed lots, refused) after an amend."""
        events = self.book.amend(order_id, acct, price_ticks, qty_lots, ts)
        if events and events[0].kind == C.EV_REJECTED:
            return "", 0, True
        self.qty[order_id] = qty_lots
        expired = False
        for ev in events:
            if ev.kind == C.EV_TRADE:
                self._trade(ev)
            elif ev.kind == C.EV_EXPIRED and ev.order_id == order_id:
                expired = True
        filled = self.filled.get(order_id, 0)
        if expired:
            return "EXPIRED", filled, False
        if self.book.find(order_id) is None:
            return "FILLED", filled, False
        return ("PARTIALLY_FILLED" if filled else "NEW"), filled, False

    def _fill(self, acct: int, engine_side: int, lots: int) -> None:
        self.position_lots[acct] = self.position_lots.get(acct, 0) + (lots if engine_side == C.SIDE_BUY else -lots)

    def _maker_fill(self, acct: int, order_id: int, leaves: int) -> None:
        reserved = self.reduce_reserved.get(acct, {})
        if order_id in reserved:
            if leaves == 0:
                del reserved[order_id]
            else:
                reserved[order_id] = (reserved[order_id][0], leaves)

    def cancel(self, order_id: int, acct: int, ts: int) -> None:
        self.book.cancel(order_id, acct, ts)
        self.reduce_reserved.get(acct, {}).pop(order_id, None)


def _expect_order(client: Client, order_id: int, status: str, executed_lots: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    got: Any = None
    while time.monotonic() < deadline:
        got = client.call("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": order_id}).json()
        if got.get("status") == status and Decimal(got["executedQty"]) == executed_lots * LOT:
            return
        time.sleep(0.1)
    raise AssertionError(f"order {order_id}: expected {status} {executed_lots * LOT}, API says {got}")


@pytest.mark.timeout(900)
def test_random_session_matches_the_model_through_kills(stack: Stack) -> None:
    rng = random.Random(20261125)
    users = [Client(stack.api, admin(stack, "create-user", "--deposit", "USDT=100000")) for _ in range(USERS)]  # type: ignore[arg-type]
    model = Model()
    open_orders: dict[int, list[int]] = {u.user_id: [] for u in users}
    mid, kills, compared = 500_000, [], 0
    moved = {u.user_id: Decimal(100000) for u in users}  # deposits - withdrawals
    for step in range(STEPS):
        if step and step % KILL_EVERY == 0:
            kills.append((step, _kill_one(stack, rng)))
        killed_recently = bool(kills) and kills[-1][0] >= step - 3
        user = rng.choice(users)
        acct = user.user_id
        mid += rng.choice((-1, 0, 1))
        roll = rng.random()
        live = [o for o in open_orders[acct] if model.book.find(o) is not None]
        if roll < 0.04:  # money in or out through the wallet, idempotent by key, mid-session
            path, amount = rng.choice((("/api/v1/wallet/deposits", Decimal(rng.randint(1, 500))),
                                       ("/api/v1/wallet/withdrawals", -Decimal(rng.randint(1, 500)))))
            done = user.native(path, {"asset": "USDT", "amount": str(abs(amount))}, f"w{step}")
            assert done.status_code == 200, (step, done.text)
            moved[acct] += amount
            continue
        if roll < 0.08 and live:
            order_id = rng.choice(live)
            new_qty = model.filled.get(order_id, 0) + rng.randint(3, 20)
            found = model.book.find(order_id)
            new_price = mid + rng.randint(-8, 8) * (1 if found.side == C.SIDE_BUY else -1)
            response = user.call("PUT", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": order_id,
                                                           "side": "BUY" if found.side == C.SIDE_BUY else "SELL",
                                                           "quantity": str(new_qty * LOT),
                                                           "price": str(new_price * TICK)})
            status, executed, refused = model.amend(order_id, acct, new_price, new_qty, step)
            if refused:
                assert response.status_code == 400 or killed_recently, (step, response.text)
                continue
            if response.status_code == 200 and not killed_recently:
                body = response.json()
                assert (body["status"], Decimal(body["executedQty"]), Decimal(body["origQty"])) == (
                    status, executed * LOT, new_qty * LOT), (step, body)
                compared += 1
            else:
                _expect_order(user, order_id, status, executed)
            continue
        if roll < 0.2 and open_orders[acct]:
            order_id = open_orders[acct].pop(rng.randrange(len(open_orders[acct])))
            response = user.call("DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": order_id})
            model.cancel(order_id, acct, step)
            assert response.status_code in (200, 400), response.text  # 400 -2011: it had filled meanwhile
            continue
        side = rng.choice(("BUY", "SELL"))
        kind, tif = rng.choice((("LIMIT", "GTC"),) * 5 + (("LIMIT", "IOC"), ("LIMIT", "FOK"), ("LIMIT", "GTX"),
                                                          ("MARKET", "GTC")))
        qty_lots = rng.randint(3, 20)
        offset = rng.randint(-8, 8)
        price_ticks = mid + (offset if side == "BUY" else -offset)
        params: dict[str, Any] = {"symbol": "BTCUSDT", "side": side, "type": kind, "quantity": str(qty_lots * LOT),
                                  "newClientOrderId": f"s{step}"}
        if kind == "LIMIT":
            params |= {"price": str(price_ticks * TICK), "timeInForce": tif}
        response = user.call("POST", "/fapi/v1/order", params)
        body = response.json()
        if response.status_code != 200 and body.get("code") in (-1007, -1001):  # a kill: find the order by its id
            for _ in range(100):
                found = user.call("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": f"s{step}"})
                if found.status_code == 200:
                    body = found.json()
                    break
                time.sleep(0.2)
        order_id = body.get("orderId")
        if order_id is None:  # refused (no liquidity, FOK not fillable, post-only would take): so must the model
            want = model.place(10**15 + step, acct, side, kind, tif, price_ticks, qty_lots, step)
            assert want[2] == body.get("code") and want[1] == 0, (step, params, body, want)
            continue
        status, executed, error = model.place(int(order_id), acct, side, kind, tif, price_ticks, qty_lots, step)
        if error is not None and "code" not in body:  # answered before settling (a kill): look later
            assert killed_recently, f"step {step}: the model refuses with {error}, the API accepted: {body}"
            _expect_order(user, int(order_id), "EXPIRED" if error == -5021 else "REJECTED", 0)
            continue
        if error is not None:
            assert body.get("code") == error, (step, body)
            continue
        if response.status_code == 200 and not killed_recently:
            assert (body["status"], Decimal(body["executedQty"])) == (status, executed * LOT), (step, params, body)
            compared += 1
        else:
            _expect_order(user, int(order_id), status, executed)
        if status in ("NEW", "PARTIALLY_FILLED"):
            open_orders[acct].append(int(order_id))

    for user in users:  # quiescence: every open order the model holds is open in the API, and nothing else
        want = sorted(o.order_id for o in model.book.resting if o.account_id == user.user_id)
        deadline = time.monotonic() + 60
        while True:
            got = sorted(o["orderId"] for o in user.call("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"}).json())
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got == want, user.user_id
    assert compared > STEPS // 3 and len(kills) >= STEPS // KILL_EVERY - 1, (compared, kills)

    sizes = {}
    for user in users:
        rows = user.call("GET", "/fapi/v3/positionRisk", {}).json()
        sizes[user.user_id] = sum(Decimal(r["positionAmt"]) for r in rows)
        assert sizes[user.user_id] == model.position_lots.get(user.user_id, 0) * LOT, user.user_id
        trades = user.call("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT", "limit": 1000}).json()
        wallet = moved[user.user_id] - sum(Decimal(t["commission"]) for t in trades) + sum(
            Decimal(t["realizedPnl"]) for t in trades)
        account = user.call("GET", "/fapi/v3/account", {}).json()["assets"][0]
        assert Decimal(account["walletBalance"]) == wallet, user.user_id
    assert sum(sizes.values()) == 0  # long open interest == short open interest

    client = get_client(stack.clickhouse())
    deadline = time.monotonic() + 60
    while True:
        unbalanced = client.query("SELECT count() FROM (SELECT journal_id, asset, sum(amount) s FROM ledger_postings "
                                  "FINAL GROUP BY journal_id, asset HAVING s != 0)").result_rows[0][0]
        fee_revenue = client.query("SELECT -sum(amount) FROM ledger_postings FINAL "
                                   "WHERE ledger_account = 'platform:FEE_REVENUE'").result_rows[0][0]
        fees = sum(Decimal(t["commission"]) for u in users
                   for t in u.call("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT", "limit": 1000}).json())
        if (unbalanced == 0 and Decimal(fee_revenue) == fees) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert unbalanced == 0 and Decimal(fee_revenue) == fees and fees > 0
