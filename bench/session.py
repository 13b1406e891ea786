"""A seeded random trading session through /fapi, checked step by step against an independent model.

Used by `tests/e2e/test_random_session.py` (a short session in `make test`) and `python -m bench.chaos`
(a long one, with every component but the broker SIGKILLed at random). The model is the naive
reference book (perpline.matcher.naive: linear scans, written apart from the core) plus plain
bookkeeping of positions from its trades. Every answer the API gives with 200 must be the order as
matching left it (status and executed quantity equal the model's); an answer the API could not give
(a kill: -1007, -1001, a dropped connection) is looked up by the order's id or client order id
until it matches. At the end: open orders, positions, wallets = money moved - fees + realised PnL,
long == short, and in ClickHouse every journal sums to zero and FEE_REVENUE equals the fees charged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx

from perpline.ch.client import get_client
from perpline.matcher.loader import load_core
from perpline.matcher.naive import NaiveBook

C: Any = load_core(pure=True)
TICK = Decimal("0.1")
LOT = Decimal("0.001")
SYMBOL = "BTCUSDT"
DEPOSIT_USDT = 100_000
UNKNOWN_CODES = (-1007, -1001)  # Binance's "status unknown" and "internal error": look the order up
DUPLICATE_COID = -4116  # a resent order that had arrived: look it up by its client order id
RETRY_S = 0.5
MAX_TRIES = 240  # a request's retries while components restart (two minutes)


class Client:
    """One funded user's signed calls; every call is retried through restarts with the same identity
    (newClientOrderId, Idempotency-Key), as a real client resends what got no answer."""

    def __init__(self, api: str, keys: dict[str, Any]) -> None:
        self.api, self.keys, self.user_id = api, keys, int(keys["user_id"])

    def native(self, path: str, body: dict[str, Any], key: str) -> httpx.Response:
        """A signed native POST (query: timestamp + signature over query + JSON body), with a fixed
        Idempotency-Key so a retry after a kill is the same request."""
        raw = json.dumps(body)
        headers = {"X-MBX-APIKEY": self.keys["api_key"], "Content-Type": "application/json", "Idempotency-Key": key}
        response: httpx.Response | None = None
        for _ in range(MAX_TRIES):
            query = urlencode({"timestamp": int(time.time() * 1000), "recvWindow": 10000})
            signature = hmac.new(self.keys["api_secret"].encode(), (query + raw).encode(), hashlib.sha256).hexdigest()
            try:
                response = httpx.post(f"{self.api}{path}?{query}&signature={signature}", content=raw, headers=headers,
                                      timeout=30)
            except httpx.TransportError:
                time.sleep(RETRY_S)
                continue
            if response.status_code in (200, 400):
                return response
            time.sleep(RETRY_S)  # 202 (no decision yet) or 5xx (a kill): resend the same request
        raise AssertionError(f"no answer for {key}: {response.text if response is not None else 'unreachable'}")

    def call(self, method: str, path: str, params: dict[str, Any]) -> httpx.Response:
        """A signed /fapi call; retried (fresh signature) while the API is unreachable or restarting."""
        for _ in range(MAX_TRIES):
            text = urlencode({**params, "timestamp": int(time.time() * 1000), "recvWindow": 10000})
            text += "&signature=" + hmac.new(self.keys["api_secret"].encode(), text.encode(), hashlib.sha256).hexdigest()
            headers = {"X-MBX-APIKEY": self.keys["api_key"]}
            try:
                if method in ("POST", "PUT"):
                    return httpx.request(method, self.api + path, content=text, timeout=30,
                                         headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
                return httpx.request(method, f"{self.api}{path}?{text}", headers=headers, timeout=30)
            except httpx.TransportError:
                time.sleep(RETRY_S)
        raise AssertionError("API unreachable")

    def read(self, path: str, params: dict[str, Any]) -> Any:
        """A signed read, retried until it answers 200 (a restarting API answers 503 while it catches up)."""
        response = None
        for _ in range(MAX_TRIES):
            response = self.call("GET", path, params)
            if response.status_code == 200:
                return response.json()
            time.sleep(RETRY_S)
        raise AssertionError(f"{path}: {response.text if response is not None else 'no answer'}")


class Model:
    """The independent expectation: the naive book, and positions from its trades."""

    def __init__(self) -> None:
        self.book = NaiveBook("BTCUSDT-PERP", C.EngineConfig())
        self.position_lots: dict[int, int] = {}
        self.filled: dict[int, int] = {}  # order id -> filled lots

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
        if status == "NEW" and filled == qty_lots:
            status = "FILLED"
        elif status == "NEW" and filled:
            status = "PARTIALLY_FILLED"
        return status, filled, error

    def _trade(self, ev: Any) -> None:
        self._fill(ev.account_id, ev.side, ev.qty_lots)
        self._fill(ev.maker_account_id, C.SIDE_SELL if ev.side == C.SIDE_BUY else C.SIDE_BUY, ev.qty_lots)
        for oid in (ev.order_id, ev.maker_order_id):
            self.filled[oid] = self.filled.get(oid, 0) + ev.qty_lots

    def amend(self, order_id: int, acct: int, price_ticks: int, qty_lots: int, ts: int) -> tuple[str, int, bool]:
        """(status, executed lots, refused) after an amend."""
        events = self.book.amend(order_id, acct, price_ticks, qty_lots, ts)
        if events and events[0].kind == C.EV_REJECTED:
            return "", 0, True
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

    def cancel(self, order_id: int, acct: int, ts: int) -> None:
        self.book.cancel(order_id, acct, ts)


def expect_order(client: Client, order_id: int, status: str, executed_lots: int, timeout_s: float = 120) -> None:
    """The order, read back, reaches exactly this status and executed quantity."""
    deadline = time.monotonic() + timeout_s
    got: Any = None
    while time.monotonic() < deadline:
        got = client.call("GET", "/fapi/v1/order", {"symbol": SYMBOL, "orderId": order_id}).json()
        if got.get("status") == status and Decimal(got["executedQty"]) == executed_lots * LOT:
            return
        time.sleep(0.1)
    raise AssertionError(f"order {order_id}: expected {status} {executed_lots * LOT}, API says {got}")


class RandomSession:
    """Steps of a seeded random flow for a few users: orders of every kind, amends, cancels, deposits
    and withdrawals. `step()` does one and checks it; `compared` counts 200 answers checked against
    the model as given, `looked_up` the ones checked by reading the order back."""

    def __init__(self, api: str, users: list[dict[str, Any]], seed: int) -> None:
        self.rng = random.Random(seed)
        self.users = [Client(api, u) for u in users]
        self.model = Model()
        self.open_orders: dict[int, list[int]] = {u.user_id: [] for u in self.users}
        self.moved = {u.user_id: Decimal(DEPOSIT_USDT) for u in self.users}  # deposits - withdrawals
        self.mid, self.steps, self.compared, self.looked_up = 500_000, 0, 0, 0
        self.expect_timeout_s = 120.0  # how long a read-back may take to show the model's outcome
        self.pending: tuple[Client, int, str, int] | None = None  # a read-back that timed out

    def step(self) -> None:
        self.steps += 1
        user = self.rng.choice(self.users)
        self.mid += self.rng.choice((-1, 0, 1))
        roll = self.rng.random()
        live = [o for o in self.open_orders[user.user_id] if self.model.book.find(o) is not None]
        if roll < 0.04:
            self._move_money(user)
        elif roll < 0.08 and live:
            self._amend(user, self.rng.choice(live))
        elif roll < 0.2 and self.open_orders[user.user_id]:
            self._cancel(user)
        else:
            self._place(user)

    def _move_money(self, user: Client) -> None:
        """Money in or out through the wallet, idempotent by key, mid-session."""
        path, amount = self.rng.choice((("/api/v1/wallet/deposits", Decimal(self.rng.randint(1, 500))),
                                        ("/api/v1/wallet/withdrawals", -Decimal(self.rng.randint(1, 500)))))
        done = user.native(path, {"asset": "USDT", "amount": str(abs(amount))}, f"w{self.steps}-{user.user_id}")
        assert done.status_code == 200, (self.steps, done.text)
        self.moved[user.user_id] += amount

    def _amend(self, user: Client, order_id: int) -> None:
        new_qty = self.model.filled.get(order_id, 0) + self.rng.randint(3, 20)
        found = self.model.book.find(order_id)
        new_price = self.mid + self.rng.randint(-8, 8) * (1 if found.side == C.SIDE_BUY else -1)
        response = user.call("PUT", "/fapi/v1/order", {"symbol": SYMBOL, "orderId": order_id,
                                                       "side": "BUY" if found.side == C.SIDE_BUY else "SELL",
                                                       "quantity": str(new_qty * LOT), "price": str(new_price * TICK)})
        status, executed, refused = self.model.amend(order_id, user.user_id, new_price, new_qty, self.steps)
        if refused:
            assert response.status_code != 200, (self.steps, "the model refuses the amend", response.text)
            return
        if response.status_code == 200:
            body = response.json()
            assert (body["status"], Decimal(body["executedQty"]), Decimal(body["origQty"])) == (
                status, executed * LOT, new_qty * LOT), (self.steps, body)
            self.compared += 1
        else:
            self._expect(user, order_id, status, executed)

    def _cancel(self, user: Client) -> None:
        orders = self.open_orders[user.user_id]
        order_id = orders.pop(self.rng.randrange(len(orders)))
        response = user.call("DELETE", "/fapi/v1/order", {"symbol": SYMBOL, "orderId": order_id})
        self.model.cancel(order_id, user.user_id, self.steps)
        assert response.status_code in (200, 400, 503), response.text  # 400 -2011: it had filled meanwhile

    def _place(self, user: Client) -> None:
        rng, coid = self.rng, f"s{self.steps}-{user.user_id}"
        side = rng.choice(("BUY", "SELL"))
        kind, tif = rng.choice((("LIMIT", "GTC"),) * 5 + (("LIMIT", "IOC"), ("LIMIT", "FOK"), ("LIMIT", "GTX"),
                                                          ("MARKET", "GTC")))
        qty_lots, offset = rng.randint(3, 20), rng.randint(-8, 8)
        price_ticks = self.mid + (offset if side == "BUY" else -offset)
        params: dict[str, Any] = {"symbol": SYMBOL, "side": side, "type": kind, "quantity": str(qty_lots * LOT),
                                  "newClientOrderId": coid}
        if kind == "LIMIT":
            params |= {"price": str(price_ticks * TICK), "timeInForce": tif}
        response = user.call("POST", "/fapi/v1/order", params)
        body, answered = response.json(), response.status_code == 200
        if not answered and body.get("code") in (*UNKNOWN_CODES, DUPLICATE_COID):
            body = self._find_by_client_id(user, coid, body)
        order_id = body.get("orderId")
        if order_id is None:  # refused (no liquidity, FOK not fillable, post-only would take): so must the model
            want = self.model.place(10**15 + self.steps, user.user_id, side, kind, tif, price_ticks, qty_lots, self.steps)
            assert want[2] == body.get("code") and want[1] == 0, (self.steps, params, body, want)
            return
        status, executed, error = self.model.place(int(order_id), user.user_id, side, kind, tif, price_ticks, qty_lots,
                                                   self.steps)
        if answered:  # a 200 is the order as matching left it, whatever was killed meanwhile
            assert error is None, (self.steps, "the model refuses with", error, "the API accepted", body)
            assert (body["status"], Decimal(body["executedQty"])) == (status, executed * LOT), (self.steps, params, body)
            self.compared += 1
        else:
            self._expect(user, int(order_id), "EXPIRED" if error == -5021 else "REJECTED" if error else status,
                         0 if error else executed)
        if status in ("NEW", "PARTIALLY_FILLED") and error is None:
            self.open_orders[user.user_id].append(int(order_id))

    def _expect(self, user: Client, order_id: int, status: str, executed_lots: int,
                timeout_s: float | None = None) -> None:
        """Read the order back until it is what the model says (kept in `pending` while not yet)."""
        self.pending = (user, order_id, status, executed_lots)
        expect_order(user, order_id, status, executed_lots, timeout_s or self.expect_timeout_s)
        self.pending = None
        self.looked_up += 1

    def retry_pending(self, timeout_s: float) -> None:
        """Check again, for longer, the order read-back that timed out (a caller that stopped the faults
        meanwhile tells a slow answer from a wrong one)."""
        if self.pending is not None:
            self._expect(*self.pending, timeout_s=timeout_s)

    def _find_by_client_id(self, user: Client, coid: str, body: dict[str, Any]) -> dict[str, Any]:
        """The order an unanswered request placed, or the answer as it was if none was placed."""
        for _ in range(MAX_TRIES):
            found = user.call("GET", "/fapi/v1/order", {"symbol": SYMBOL, "origClientOrderId": coid})
            if found.status_code == 200:
                return dict(found.json())
            time.sleep(RETRY_S)
        return body

    # --- the end checks --------------------------------------------------------------------------

    def check_open_orders(self, timeout_s: float = 120) -> None:
        """Every open order the model holds is open in the API, and nothing else."""
        for user in self.users:
            want = sorted(o.order_id for o in self.model.book.resting if o.account_id == user.user_id)
            deadline = time.monotonic() + timeout_s
            while True:
                got = sorted(o["orderId"] for o in user.read("/fapi/v1/openOrders", {"symbol": SYMBOL}))
                if got == want or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert got == want, (user.user_id, got, want)

    def check_positions_and_wallets(self) -> Decimal:
        """Positions equal the model's, wallets = money moved - fees + realised PnL, long == short;
        returns the fees charged."""
        sizes, fees = {}, Decimal(0)
        for user in self.users:
            rows = user.read("/fapi/v3/positionRisk", {})
            sizes[user.user_id] = sum(Decimal(r["positionAmt"]) for r in rows)
            assert sizes[user.user_id] == self.model.position_lots.get(user.user_id, 0) * LOT, user.user_id
            trades = self.all_trades(user)
            charged = sum(Decimal(t["commission"]) for t in trades)
            wallet = self.moved[user.user_id] - charged + sum(Decimal(t["realizedPnl"]) for t in trades)
            account = user.read("/fapi/v3/account", {})["assets"][0]
            assert Decimal(account["walletBalance"]) == wallet, (user.user_id, account["walletBalance"], wallet)
            fees += charged
        assert sum(sizes.values()) == 0  # long open interest == short open interest
        return fees

    @staticmethod
    def all_trades(user: Any) -> list[dict[str, Any]]:
        """Every trade of the user, paged forward by id as Binance clients do (a page holds 1,000)."""
        trades: list[dict[str, Any]] = []
        while True:
            page = user.read("/fapi/v1/userTrades", {"symbol": SYMBOL, "limit": 1000,
                                                     "fromId": trades[-1]["id"] + 1 if trades else 0})
            trades += page
            if len(page) < 1000:
                return trades

    def check_ledger(self, clickhouse_url: str, fees: Decimal, timeout_s: float = 120) -> None:
        """In ClickHouse: every journal sums to zero per asset, FEE_REVENUE equals the fees charged."""
        client = get_client(clickhouse_url)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                unbalanced = client.query("SELECT count() FROM (SELECT journal_id, asset, sum(amount) s FROM "
                                          "ledger_postings FINAL GROUP BY journal_id, asset HAVING s != 0)").result_rows[0][0]
                revenue = Decimal(client.query("SELECT -sum(amount) FROM ledger_postings FINAL "
                                               "WHERE ledger_account = 'platform:FEE_REVENUE'").result_rows[0][0])
            except Exception:  # noqa: BLE001 (ClickHouse restarting after a kill: ask again)
                unbalanced, revenue = -1, Decimal(-1)
            if (unbalanced == 0 and revenue == fees) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert unbalanced == 0 and revenue == fees and fees > 0, (unbalanced, revenue, fees)
