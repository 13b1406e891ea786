"""A new user's ccxt session against the local stack, as shared/BINANCE_USDM_SUBSET.md tells them to
configure `ccxt.binanceusdm`: two users made with `perpline admin create-user`, markets, book,
orders of every kind, fills, positions, balances, trades, candles, and ccxt's own error classes."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import ccxt
import httpx
import pytest
from stackutil import Stack, admin, running_stack

pytestmark = pytest.mark.e2e
SYM = "BTC/USDT:USDT"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory)


def client(base: str, key: str, secret: str) -> Any:
    ex = ccxt.binanceusdm({"apiKey": key, "secret": secret, "options": {
        "fetchCurrencies": False, "fetchMarkets": {"types": ["linear"]}, "adjustForTimeDifference": False,
        "fetchOpenOrders": {"warnWithoutSymbol": False}}})
    ex.urls["api"] = {"fapiPublic": base + "/fapi/v1", "fapiPublicV2": base + "/fapi/v2", "fapiPublicV3": base + "/fapi/v3",
                      "fapiPrivate": base + "/fapi/v1", "fapiPrivateV2": base + "/fapi/v2",
                      "fapiPrivateV3": base + "/fapi/v3", "fapiData": base + "/futures/data"}
    ex.exceptions["exact"] = {**ex.exceptions["exact"], **ex.exceptions["linear"]["exact"]}
    return ex


def test_a_full_ccxt_session_between_two_users(stack: Stack) -> None:
    alice_keys = admin(stack, "create-user", "--label", "alice", "--deposit", "USDT=10000")
    bob_keys = admin(stack, "create-user", "--label", "bob", "--deposit", "USDT=10000")
    assert isinstance(alice_keys, dict) and isinstance(bob_keys, dict)
    assert alice_keys["user_id"] != bob_keys["user_id"] and len(alice_keys["api_secret"]) == 64
    alice = client(stack.api, alice_keys["api_key"], alice_keys["api_secret"])
    bob = client(stack.api, bob_keys["api_key"], bob_keys["api_secret"])

    markets = alice.load_markets()
    market = markets[SYM]
    assert market["linear"] and market["contract"] and market["settle"] == "USDT"
    assert market["precision"]["price"] == 0.1 and market["precision"]["amount"] == 0.001
    assert market["limits"]["cost"]["min"] == 100
    bob.load_markets()
    assert alice.fetch_balance()["USDT"]["free"] == 10000
    for ex in (alice, bob):
        ex.set_leverage(10, SYM)

    ask = alice.create_order(SYM, "limit", "sell", 0.01, 50000)
    assert ask["status"] == "open" and ask["filled"] == 0 and ask["price"] == 50000
    assert [o["id"] for o in alice.fetch_open_orders(SYM)] == [ask["id"]]
    book = bob.fetch_order_book(SYM)
    assert book["asks"][0][:2] == [50000, 0.01] and book["bids"] == []

    taken = bob.create_order(SYM, "market", "buy", 0.004)
    assert taken["status"] == "closed" and taken["filled"] == 0.004 and taken["average"] == 50000
    crossing = bob.create_order(SYM, "limit", "buy", 0.006, 50010)
    assert crossing["status"] == "closed" and crossing["filled"] == 0.006 and crossing["average"] == 50000
    done = alice.fetch_order(ask["id"], SYM)
    assert done["status"] == "closed" and done["filled"] == 0.01 and done["cost"] == 500
    assert alice.fetch_open_orders(SYM) == []

    alice_trades = alice.fetch_my_trades(SYM)
    assert [(t["side"], t["amount"], t["price"], t["takerOrMaker"]) for t in alice_trades] == [
        ("sell", 0.004, 50000, "maker"), ("sell", 0.006, 50000, "maker")]
    assert round(sum(t["fee"]["cost"] for t in alice_trades), 8) == 0.1  # 500 x 0.02 %
    bob_trades = bob.fetch_my_trades(SYM)
    assert [t["takerOrMaker"] for t in bob_trades] == ["taker", "taker"]
    assert round(sum(t["fee"]["cost"] for t in bob_trades), 8) == 0.25  # 500 x 0.05 %

    (short,) = alice.fetch_positions([SYM])
    (long,) = bob.fetch_positions([SYM])
    assert (short["side"], short["contracts"], short["entryPrice"]) == ("short", 0.01, 50000)
    assert (long["side"], long["contracts"], long["entryPrice"]) == ("long", 0.01, 50000)
    bal = bob.fetch_balance()["USDT"]
    assert bal["total"] == 9999.75 and bal["used"] == 50 and bal["free"] == 9949.75  # margin 500 / 10

    public = bob.fetch_trades(SYM)
    assert [(t["amount"], t["side"]) for t in public] == [(0.004, "buy"), (0.006, "buy")]
    assert bob.fetch_ticker(SYM)["last"] == 50000
    candles = bob.fetch_ohlcv(SYM, "1m")
    assert sum(c[5] for c in candles) == 0.01 and candles[-1][4] == 50000
    assert bob.fetch_trading_fee(SYM)["taker"] == 0.0005

    resting = bob.create_order(SYM, "limit", "buy", 0.003, 48000)
    edited = bob.edit_order(resting["id"], SYM, "limit", "buy", 0.004, 48100)
    assert (edited["id"], edited["amount"], edited["price"], edited["status"]) == (resting["id"], 0.004, 48100, "open")
    assert bob.fetch_order_book(SYM)["bids"][0][:2] == [48100, 0.004]
    with pytest.raises(ccxt.BadRequest):  # -4016: more than 5% from the last price
        bob.create_order(SYM, "limit", "buy", 0.003, 40000)
    cancelled = bob.cancel_order(resting["id"], SYM)
    assert cancelled["status"] == "canceled" and bob.fetch_open_orders(SYM) == []
    closing = bob.create_order(SYM, "limit", "sell", 0.01, 52000, params={"reduceOnly": True})
    assert closing["status"] == "open" and closing["reduceOnly"] is True
    with pytest.raises(ccxt.InvalidOrder):  # -2022: would exceed the position
        bob.create_order(SYM, "limit", "sell", 0.001, 52000, params={"reduceOnly": True})
    bob.cancel_order(closing["id"], SYM)

    with pytest.raises(ccxt.InsufficientFunds):
        bob.create_order(SYM, "limit", "buy", 100, 50000)
    with pytest.raises(ccxt.OrderNotFound):
        bob.cancel_order("123456789", SYM)
    with pytest.raises(ccxt.OrderNotFound):
        bob.fetch_order("123456789", SYM)
    alice.create_order(SYM, "limit", "sell", 0.002, 50500)
    with pytest.raises(ccxt.OrderNotFillable):  # -5022 post-only would take
        bob.create_order(SYM, "limit", "buy", 0.002, 50500, params={"postOnly": True})
    with pytest.raises(ccxt.BadSymbol):
        bob.fetch_order_book("NOPE/USDT:USDT") if False else bob.fapiPublicGetDepth({"symbol": "NOPEUSDT"})
    impostor = client(stack.api, bob_keys["api_key"], "0" * 64)
    with pytest.raises(ccxt.AuthenticationError):
        impostor.fetch_balance()
    assert bob.fetch_balance()["USDT"]["total"] == 9999.75  # none of the refused requests changed anything


def test_an_oversized_reduce_only_market_order_closes_the_position(stack: Stack) -> None:
    """How many clients close a position: a reduce-only MARKET order far larger than it. Binance accepts
    it, fills up to the position and does not execute the rest (EXPIRED); the average price is exact."""
    grace_keys = admin(stack, "create-user", "--label", "grace", "--deposit", "USDT=10000")
    heidi_keys = admin(stack, "create-user", "--label", "heidi", "--deposit", "USDT=10000")
    assert isinstance(grace_keys, dict) and isinstance(heidi_keys, dict)
    grace = client(stack.api, grace_keys["api_key"], grace_keys["api_secret"])
    heidi = client(stack.api, heidi_keys["api_key"], heidi_keys["api_secret"])
    grace.load_markets()
    heidi.load_markets()
    heidi.create_order(SYM, "limit", "sell", 0.012, 50000)
    assert grace.create_order(SYM, "market", "buy", 0.012)["filled"] == 0.012
    (long,) = grace.fetch_positions([SYM])
    assert (long["side"], long["contracts"]) == ("long", 0.012)
    heidi.create_order(SYM, "limit", "buy", 0.009, 49923.5)  # the best bids: 0.012 at an average of 49923.475
    heidi.create_order(SYM, "limit", "buy", 0.003, 49923.4)

    closing = grace.create_order(SYM, "market", "sell", 1, params={"reduceOnly": True})
    assert (closing["status"], closing["amount"], closing["filled"]) == ("expired", 1, 0.012)
    assert closing["info"]["avgPrice"] == "49923.475" and closing["average"] == 49923.475
    assert closing["info"]["cumQuote"] == "599.08170000"
    assert grace.fetch_positions([SYM]) == []  # flat: nothing opened by the excess
    assert [(t["side"], t["amount"]) for t in grace.fetch_my_trades(SYM)][-2:] == [("sell", 0.009), ("sell", 0.003)]
    with pytest.raises(ccxt.InvalidOrder):  # -2022: no position left to reduce
        grace.create_order(SYM, "market", "sell", 1, params={"reduceOnly": True})


def signed(base: str, method: str, path: str, keys: dict, params: dict, secret: str | None = None,
           timestamp: int | None = None) -> httpx.Response:
    """A raw Binance-style signed request: params + timestamp, HMAC-SHA256 appended."""
    text = urlencode({**params, "timestamp": timestamp or int(time.time() * 1000), "recvWindow": 5000})
    text += "&signature=" + hmac.new((secret or keys["api_secret"]).encode(), text.encode(), hashlib.sha256).hexdigest()
    headers = {"X-MBX-APIKEY": keys["api_key"]}
    if method in ("POST", "PUT"):
        return httpx.request(method, base + path, content=text, timeout=30,
                             headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
    return httpx.request(method, f"{base}{path}?{text}", headers=headers, timeout=30)


def test_bad_requests_get_binance_errors_and_change_nothing(stack: Stack) -> None:
    api = stack.api
    carol = admin(stack, "create-user", "--label", "carol", "--deposit", "USDT=1000")
    dave = admin(stack, "create-user", "--label", "dave", "--deposit", "USDT=1000")
    assert isinstance(carol, dict) and isinstance(dave, dict)
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.010",
             "price": "49000"}
    placed = signed(api, "POST", "/fapi/v1/order", carol, order)
    assert placed.status_code == 200, placed.text
    order_id = placed.json()["orderId"]

    def refused(response: httpx.Response, status: int, code: int) -> None:
        assert (response.status_code, response.json()["code"]) == (status, code), response.text

    refused(signed(api, "GET", "/fapi/v1/order", dave, {"symbol": "BTCUSDT", "orderId": order_id}), 400, -2013)
    refused(signed(api, "DELETE", "/fapi/v1/order", dave, {"symbol": "BTCUSDT", "orderId": order_id}), 400, -2011)
    refused(signed(api, "GET", "/fapi/v3/account", carol, {}, secret="0" * 64), 400, -1022)
    refused(signed(api, "GET", "/fapi/v3/account", carol, {}, timestamp=int(time.time() * 1000) - 60_000), 400, -1021)
    refused(signed(api, "GET", "/fapi/v3/account", {**carol, "api_key": "nokey"}, {}), 401, -2015)
    refused(httpx.get(api + "/fapi/v3/account", timeout=30), 401, -2014)
    refused(httpx.get(api + "/fapi/v1/nothing", timeout=30), 404, -1000)
    body = urlencode({"symbol": "BTCUSDT", "leverage": 5, "timestamp": int(time.time() * 1000)})
    body += "&signature=" + hmac.new(carol["api_secret"].encode(), body.encode(), hashlib.sha256).hexdigest()
    headers = {"X-MBX-APIKEY": carol["api_key"], "Content-Type": "application/x-www-form-urlencoded"}
    assert httpx.post(api + "/fapi/v1/leverage", content=body, headers=headers, timeout=30).status_code == 200
    refused(httpx.post(api + "/fapi/v1/leverage", content=body, headers=headers, timeout=30), 400, -1022)  # replay

    for field, value, code in (("quantity", "NaN", -1100), ("quantity", "-1", -1100), ("quantity", "1e3", -1100),
                               ("quantity", "0.0001", -1111), ("quantity", "0.0105", -1111),
                               ("price", "49000.055", -1111), ("price", "49000.15", -4014), ("price", "10000", -4016),
                               ("quantity", "9" * 40, -1100), ("quantity", "0.002", -4164),
                               ("symbol", "NOPEUSDT", -1121), ("side", "UP", -1117), ("type", "STOP", -1116),
                               ("timeInForce", "DAY", -1115), ("quantity", "100", -2019)):
        refused(signed(api, "POST", "/fapi/v1/order", carol, {**order, field: value}), 400, code)
    readonly = admin(stack, "create-key", "--user", str(carol["user_id"]), "--permissions", "read")
    assert isinstance(readonly, dict)
    refused(signed(api, "POST", "/fapi/v1/order", readonly, order), 401, -2015)
    assert signed(api, "GET", "/fapi/v1/openOrders", readonly, {"symbol": "BTCUSDT"}).status_code == 200
    admin(stack, "revoke-key", "--user", str(carol["user_id"]), "--api-key", readonly["api_key"])
    deadline = time.monotonic() + 5  # every API replica applies the revocation from auth.keys within moments
    while signed(api, "GET", "/fapi/v1/openOrders", readonly, {"symbol": "BTCUSDT"}).status_code == 200:
        assert time.monotonic() < deadline, "revoked key still accepted after 5 s"
        time.sleep(0.05)
    refused(signed(api, "GET", "/fapi/v1/openOrders", readonly, {"symbol": "BTCUSDT"}), 401, -2015)

    account = signed(api, "GET", "/fapi/v3/account", carol, {}).json()["assets"][0]
    assert account["walletBalance"] == "1000.00000000" and account["openOrderInitialMargin"] == "24.74500000"
    assert [o["orderId"] for o in signed(api, "GET", "/fapi/v1/openOrders", carol, {"symbol": "BTCUSDT"}).json()] == [
        order_id]


def native(base: str, method: str, path: str, keys: dict, body: dict | None = None) -> httpx.Response:
    """A signed native request: timestamp and signature in the query, signed over query + JSON body."""
    raw = json.dumps(body) if body is not None else ""
    query = urlencode({"timestamp": int(time.time() * 1000)})
    signature = hmac.new(keys["api_secret"].encode(), (query + raw).encode(), hashlib.sha256).hexdigest()
    return httpx.request(method, f"{base}{path}?{query}&signature={signature}", content=raw or None, timeout=30,
                         headers={"X-MBX-APIKEY": keys["api_key"], "Content-Type": "application/json"})


def test_keys_are_managed_through_the_signed_native_api(stack: Stack) -> None:
    api = stack.api
    erin = admin(stack, "create-user", "--label", "erin")
    assert isinstance(erin, dict)
    made = native(api, "POST", "/api/v1/keys", erin, {"permissions": ["read"], "label": "bot"})
    assert made.status_code == 200, made.text
    bot = {**made.json(), "user_id": erin["user_id"]}
    listed = native(api, "GET", "/api/v1/keys", erin).json()
    assert {k["api_key"]: k["permissions"] for k in listed}[bot["api_key"]] == ["read"]
    assert "api_secret" not in str(listed) and bot["api_secret"] not in str(listed)
    assert native(api, "GET", "/api/v1/account/balances", bot).status_code == 200
    refused = native(api, "POST", "/api/v1/orders", bot, {"symbol": "BTCUSDT-PERP", "side": "BUY", "price": "100",
                                                          "quantity": "1.000"})
    assert refused.status_code == 401, refused.text  # read-only key
    other = admin(stack, "create-user", "--label", "frank")
    assert isinstance(other, dict)
    assert native(api, "DELETE", f"/api/v1/keys/{bot['api_key']}", other).status_code == 401  # not frank's key
    assert native(api, "DELETE", f"/api/v1/keys/{bot['api_key']}", erin).json()["revoked"] is True
    assert native(api, "GET", "/api/v1/account/balances", bot).status_code == 401


def test_web_sessions_sign_up_log_in_trade_refresh_and_log_out(stack: Stack) -> None:
    api = stack.api
    creds = {"login": "carol@example.com", "password": "s3cret-enough"}
    user = httpx.post(f"{api}/api/v1/auth/signup", json=creds, timeout=30)
    assert user.status_code == 200, user.text
    user_id = user.json()["user_id"]
    again = httpx.post(f"{api}/api/v1/auth/signup", json=creds, timeout=30)
    assert again.status_code == 409 and again.json()["code"] == 6010
    for bad in ({"login": "carol@example.com", "password": "wrong-password"},
                {"login": "nobody-here", "password": "s3cret-enough"}):
        refused = httpx.post(f"{api}/api/v1/auth/login", json=bad, timeout=30)
        assert refused.status_code == 401 and refused.json()["code"] == 6009, refused.text
    assert httpx.post(f"{api}/api/v1/auth/signup", json={"login": "x y", "password": "s3cret-enough"},
                      timeout=30).status_code == 400
    assert httpx.post(f"{api}/api/v1/auth/signup", json={"login": "dave", "password": "short"},
                      timeout=30).status_code in (400, 422)

    session = httpx.post(f"{api}/api/v1/auth/login", json=creds, timeout=30).json()
    bearer = {"Authorization": f"Bearer {session['access_token']}"}
    assert session["user_id"] == user_id and session["expires_in"] == 900
    assert httpx.get(f"{api}/api/v1/auth/me", headers=bearer, timeout=30).json()["user_id"] == user_id
    admin(stack, "deposit", "--user", str(user_id), "USDT=1000")
    placed = httpx.post(f"{api}/api/v1/orders", headers=bearer, timeout=30, json={
        "symbol": "BTCUSDT-PERP", "side": "BUY", "type": "LIMIT", "price": "48000", "quantity": "0.005"})
    assert placed.status_code == 200, placed.text
    opened = httpx.get(f"{api}/api/v1/orders", headers=bearer, timeout=30).json()
    assert [o["order_id"] for o in opened] == [placed.json()["order_id"]]
    tampered = session["access_token"][:-2] + ("AA" if not session["access_token"].endswith("AA") else "BB")
    assert httpx.get(f"{api}/api/v1/orders", headers={"Authorization": f"Bearer {tampered}"},
                     timeout=30).json()["code"] == 6011

    renewed = httpx.post(f"{api}/api/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}, timeout=30)
    assert renewed.status_code == 200, renewed.text
    reused = httpx.post(f"{api}/api/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}, timeout=30)
    assert reused.status_code == 401 and reused.json()["code"] == 6011  # rotation: a used refresh token is dead
    old = httpx.get(f"{api}/api/v1/orders", headers=bearer, timeout=30)
    assert old.status_code == 401  # the refreshed session ended with it
    bearer = {"Authorization": f"Bearer {renewed.json()['access_token']}"}
    assert httpx.get(f"{api}/api/v1/account/balances", headers=bearer, timeout=30).status_code == 200
    assert httpx.post(f"{api}/api/v1/auth/logout", headers=bearer, timeout=30).json() == {"ok": True}
    after = httpx.get(f"{api}/api/v1/account/balances", headers=bearer, timeout=30)
    assert after.status_code == 401 and after.json()["code"] == 6011
