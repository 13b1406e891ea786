"""The API's input limits without a broker: request sizes, rate limits on every route (weights, the
client address, 429s), strict integer and decimal parameters, duplicate and query-versus-body
parameters (issue 16), through the ASGI app where a route is involved."""

from __future__ import annotations

import asyncio
import re
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi.routing import iter_route_contexts
from starlette.requests import HTTPConnection
from starlette.testclient import TestClient, WebSocketDenialResponse

from perpline.api import clientip, fapi, main, ratelimit, v1
from perpline.api.app import MAX_BODY_BYTES, MAX_QUERY_BYTES, ApiDeps, create_app
from perpline.api.clientip import trusted_networks
from perpline.api.ratelimit import RateLimiter
from perpline.api.reads.accounts import AccountViews
from perpline.api.service import sessions
from perpline.auth import crypto, signing
from perpline.auth.registry import USER_ID_BASE, KeyRegistry
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.contracts.units import UnitError, parse_fixed, parse_uint


def call(method: str, url: str, **kwargs: object) -> httpx.Response:
    app = create_app(ApiDeps(bootstrap="unused:1", topics={}, wait_s=0.1))

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.request(method, url, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(go())


async def chunks() -> object:
    yield b"{}"


def test_oversized_bodies_queries_and_undeclared_lengths_are_refused_with_413() -> None:
    cases = [
        call("POST", "/api/v1/orders", content=b"x" * (MAX_BODY_BYTES + 1)),
        call("POST", "/api/v1/orders", content=b"{}", headers={"Content-Length": "abc"}),
        call("GET", "/api/v1/orders?" + "a" * (MAX_QUERY_BYTES + 1)),
        call("POST", "/api/v1/orders", content=chunks()),  # a generator body goes out chunked
    ]
    for response in cases:
        assert response.status_code == 413, response.text
        assert response.json()["code"] == 6004 and response.headers["X-Trace-Id"]


def test_a_json_read_carries_an_etag_and_an_unchanged_one_is_answered_304() -> None:
    first = call("GET", "/api/v1/market/instruments")
    assert first.status_code == 200 and first.headers["ETag"].startswith('"')
    again = call("GET", "/api/v1/market/instruments", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == first.headers["ETag"]
    other = call("GET", "/api/v1/market/instruments", headers={"If-None-Match": '"stale"'})
    assert other.status_code == 200 and other.json() == first.json()


# --- issue 16: rate limits on every route, the client address, strict integers, parameters ---------

API_KEY, SECRET = "k" * 64, "s" * 64


@pytest.fixture(autouse=True)
def one_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limiter's clock stays 30 s into one minute, so no count is reset halfway through a test."""
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: 60_000_030.0))


def limited_app(ip: int = 1000, key: int = 1000, orders: int = 1000, trusted: str = "",
                readmodel: object = None, trust_header: bool = False) -> Any:
    """The app with a registry holding one API key (user USER_ID_BASE, read+trade), no broker."""
    secret_key = crypto.generate_secret_key()
    registry = KeyRegistry(secret_key)
    registry.apply(m.ApiKeyIssued(trace_id="t", causation_id="c", ts_ms=1, api_key=API_KEY, user_id=USER_ID_BASE,
                                  secret_enc=crypto.encrypt(secret_key, SECRET), permissions=["read", "trade"]), offset=0)
    deps = ApiDeps(bootstrap="unused:1", topics={}, wait_s=0.1, secret_key=secret_key, registry=registry,
                   limiter=RateLimiter(ip, key, orders), trusted_proxies=trusted_networks(trusted.split(",")),
                   readmodel=readmodel, trust_account_header=trust_header)  # type: ignore[arg-type]
    return create_app(deps)


def calls(app: Any, *requests: tuple[str, str, dict[str, Any]]) -> list[httpx.Response]:
    """Requests in order through one ASGI app (the peer is 127.0.0.1, as httpx's ASGI transport says)."""
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.request(method, url, **kw) for method, url, kw in requests]

    return asyncio.run(go())


def signed(method: str, path: str, query: str, body: str = "", form: bool = True) -> tuple[str, str, dict[str, Any]]:
    """A Binance-signed request: the signature over query + body, in the query."""
    query = quote(query, safe="=&")  # what the server sees (and verifies the signature over) is the encoded text
    head = f"{query}&timestamp={int(time.time() * 1000)}" if query else f"timestamp={int(time.time() * 1000)}"
    url = f"{path}?{head}&signature={signing.sign(SECRET, head + body)}"
    headers = {"X-MBX-APIKEY": API_KEY}
    if body:
        headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
    return method, url, {"headers": headers, "content": body.encode()}


def test_every_route_has_a_weight_and_only_probes_and_web_files_are_exempt() -> None:
    app = create_app(ApiDeps(bootstrap="unused:1", topics={}, wait_s=0.1))
    keys = {key for context in iter_route_contexts(app.routes) for _, key in ratelimit._route_keys(context.original_route)}  # noqa: SLF001
    unweighted = {k for k in keys if k not in ratelimit.WEIGHTS and k not in ratelimit.EXEMPT}
    assert not unweighted, f"give these routes a weight in perpline.api.ratelimit.WEIGHTS: {sorted(unweighted)}"
    assert ratelimit.EXEMPT <= keys and set(ratelimit.WEIGHTS) <= keys  # no entry for a route that is gone
    assert ratelimit.EXEMPT == {"GET /metrics", "GET /healthz", "GET /readyz", "GET /", "MOUNT /app"}
    assert any(k.startswith("WS ") for k in keys) and any(k.startswith("POST /api/v1/auth/") for k in keys)
    assert {k for k in keys if ratelimit.WEIGHTS.get(k, ratelimit.READ).orders} == {
        "POST /api/v1/orders", "PUT /api/v1/orders/{order_id}", "POST /fapi/v1/order", "PUT /fapi/v1/order"}

    costs = ratelimit.RouteCosts(app.routes)
    for key in keys - ratelimit.EXEMPT - {k for k in keys if k.startswith("MOUNT")}:  # each request finds its own cost
        method, path = key.split(" ", 1)
        concrete = re.sub(r"\{[^}]*\}", "7", path.replace("{path:path}", "x/y"))
        scope = {"type": "websocket" if method == "WS" else "http", "method": method, "path": concrete, "app": app}
        assert costs.of(HTTPConnection(scope)) is ratelimit.WEIGHTS[key], key  # is: UNMATCHED equals READ

    @app.get("/api/v1/brand-new")
    def brand_new() -> Any:
        return {}

    with pytest.raises(ValueError, match="brand-new"):  # the app itself refuses to start with an unweighted route
        ratelimit.RouteCosts(app.routes)


def test_native_signed_calls_carry_the_weight_and_are_refused_429_beyond_the_key_limit() -> None:
    app = limited_app(key=3)
    answers = calls(app, *[signed("GET", "/api/v1/keys", "")] * 4, ("GET", "/healthz", {}))
    assert [r.status_code for r in answers[:3]] == [200, 200, 200], answers[0].text
    assert [int(r.headers["X-MBX-USED-WEIGHT-1M"]) for r in answers[:3]] == [1, 2, 3]
    refused = answers[3]
    assert refused.status_code == 429 and refused.json()["code"] == int(Code.RATE_LIMITED)
    assert refused.headers["Retry-After"] == "30" and refused.headers["X-MBX-USED-WEIGHT-1M"] == "4"
    assert answers[4].status_code == 200 and "X-MBX-USED-WEIGHT-1M" not in answers[4].headers  # probes are exempt


def test_both_apis_share_the_address_limit_and_fapi_answers_minus_1003() -> None:
    app = limited_app(ip=5)
    answers = calls(app, ("GET", "/api/v1/market/instruments", {}), ("GET", "/fapi/v1/ping", {}),
                    ("GET", "/api/v1/auth/me", {}), ("GET", "/docs", {}), ("GET", "/fapi/v1/time", {}),
                    ("GET", "/api/v1/market/instruments", {}), ("GET", "/metrics", {}), ("GET", "/app/index.html", {}))
    assert [r.status_code for r in answers] == [200, 200, 401, 200, 200, 429, 200, 200]
    assert [r.headers.get("X-MBX-USED-WEIGHT-1M") for r in answers[:6]] == ["1", "2", "3", "4", "5", "6"]
    again = calls(app, ("GET", "/fapi/v1/time", {}))[0]
    assert again.status_code == 429 and again.json()["code"] == -1003 and again.headers["Retry-After"]


def test_order_placing_routes_of_the_native_api_count_in_the_orders_limit() -> None:
    app = limited_app(orders=2, trust_header=True)
    place = ("POST", "/api/v1/orders", {"headers": {"X-Account-Id": "7"},
                                         "json": {"symbol": "NOPE", "side": "BUY", "quantity": "1"}})
    answers = calls(app, place, place, ("GET", "/api/v1/keys", {"headers": {"X-Account-Id": "7"}}), place)
    assert [r.status_code for r in answers] == [400, 400, 200, 429]  # unknown symbol twice, a read, then no more orders
    assert answers[3].json()["code"] == int(Code.RATE_LIMITED)


def test_a_websocket_upgrade_is_charged_and_refused_429() -> None:
    app = limited_app(ip=5)  # a market stream costs 5
    client = TestClient(app, client=("127.0.0.1", 40000))  # no `with`: no lifespan, no broker
    assert client.get("/api/v1/market/instruments").status_code == 200  # weight 1 of 5
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/api/v1/market/stream?symbol=NOPE"):
        pass
    assert denied.value.status_code == 429 and denied.value.json()["code"] == int(Code.RATE_LIMITED)


def test_x_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    spoofed = [("GET", "/fapi/v1/ping", {"headers": {"X-Forwarded-For": f"10.0.0.{n}"}}) for n in range(3)]
    untrusted = calls(limited_app(), *spoofed)  # the default: no proxy is trusted, the peer is the bucket
    assert [r.headers["X-MBX-USED-WEIGHT-1M"] for r in untrusted] == ["1", "2", "3"]
    trusted = calls(limited_app(trusted="127.0.0.1"), *spoofed)  # behind a trusted proxy: one bucket per client
    assert [r.headers["X-MBX-USED-WEIGHT-1M"] for r in trusted] == ["1", "1", "1"]


@pytest.mark.parametrize(("peer", "forwarded", "trusted", "expected"), [
    ("127.0.0.1", ["10.0.0.9"], "", "127.0.0.1"),  # nothing trusted: the header is ignored
    ("127.0.0.1", ["10.0.0.9"], "127.0.0.1", "10.0.0.9"),
    ("203.0.113.7", ["10.0.0.9"], "127.0.0.1", "203.0.113.7"),  # a peer that is not our proxy
    ("10.1.2.3", ["6.6.6.6, 198.51.100.4, 10.1.0.1"], "10.0.0.0/8", "198.51.100.4"),  # right to left, first untrusted
    ("10.1.2.3", ["6.6.6.6", "198.51.100.4"], "10.0.0.0/8", "198.51.100.4"),  # several header lines
    ("10.1.2.3", ["not-an-ip, 10.1.0.1"], "10.0.0.0/8", "10.1.0.1"),  # garbage: stay with the last trusted hop
    ("10.1.2.3", [], "10.0.0.0/8", "10.1.2.3"),
    ("::1", ["2001:db8::5"], "::1", "2001:db8::5"),
])
def test_client_ip_resolves_the_forwarded_chain(peer: str, forwarded: list[str], trusted: str, expected: str) -> None:
    assert clientip.resolve(peer, forwarded, trusted_networks(trusted.split(","))) == expected


def test_trusted_proxies_are_parsed_strictly_and_uvicorn_does_not_rewrite_the_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="PERPLINE_TRUSTED_PROXIES"):
        trusted_networks(["10.0.0.0/8", "proxy.local"])
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.setattr(main, "start_read_model", lambda *args: (None, None))  # no broker here
    monkeypatch.setenv("PERPLINE_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1")
    main.main(["--port", "1"])
    assert seen["proxy_headers"] is False
    assert [str(n) for n in seen["app"].state.trusted_proxies] == ["10.0.0.0/8", "192.0.2.1/32"]


@pytest.mark.parametrize("bad", ["²", "①", "١", "--5", "-1", "+1", " 1", "1 ", "1\n", "1_0", "1.0", "0x1", "9" * 20])
def test_the_integer_parser_takes_ascii_digits_only(bad: str) -> None:
    with pytest.raises(UnitError) as err:
        parse_uint(bad, what="n")
    assert err.value.code == Code.BAD_NUMBER


def test_the_integer_parser_bounds_and_empties() -> None:
    assert [parse_uint(t, what="n") for t in ("0", "7", "007", str(2**63 - 1))] == [0, 7, 7, 2**63 - 1]
    for empty in ("", None):
        with pytest.raises(UnitError) as err:
            parse_uint(empty, what="n")
        assert err.value.code == Code.MISSING_FIELD
    with pytest.raises(UnitError):
        parse_uint("1001", what="limit", minimum=1, maximum=1000)
    with pytest.raises(signing.SignatureError):
        signing.check_time({"timestamp": f"{int(time.time() * 1000)}\n"}, int(time.time() * 1000))


class NoTrades:
    """The little of the read model the refused requests below may reach."""

    def trades(self, symbol: str, limit: int) -> list[Any]:
        return []

    accounts = AccountViews()  # no account holds anything


@pytest.mark.parametrize(("method", "path", "query", "binance_code"), [
    ("GET", "/fapi/v1/trades", "symbol=BTCUSDT&limit=²", -1100),
    ("GET", "/fapi/v1/klines", "symbol=BTCUSDT&interval=1m&limit=²", -1100),
    ("GET", "/fapi/v1/aggTrades", "symbol=BTCUSDT&startTime=--1", -1100),
    ("GET", "/fapi/v1/aggTrades", "symbol=BTCUSDT&endTime=①", -1100),
    ("SIGNED POST", "/fapi/v1/leverage", "symbol=BTCUSDT&leverage=--5", -1100),
    ("SIGNED POST", "/fapi/v1/leverage", "symbol=BTCUSDT&leverage=²", -1100),
    ("SIGNED GET", "/fapi/v1/order", "symbol=BTCUSDT&orderId=①", -1100),
    ("SIGNED GET", "/fapi/v1/allOrders", "symbol=BTCUSDT&limit=1&startTime=--1", -1100),
    ("GET", "/fapi/v1/trades", "symbol=ETHUSDT&symbol=BTCUSDT", -1101),
])
def test_bad_integers_and_duplicates_on_fapi_get_binance_codes_not_500(method: str, path: str, query: str,
                                                                       binance_code: int) -> None:
    request = signed(method.split()[1], path, query) if method.startswith("SIGNED") else (method, f"{path}?{query}", {})
    answer = calls(limited_app(readmodel=NoTrades()), request)[0]
    assert answer.status_code == 400 and answer.json()["code"] == binance_code, answer.text


def test_native_duplicates_bad_account_header_and_trailing_newlines_are_refused() -> None:
    app = limited_app(trust_header=True)
    dup, bad_header, newline = calls(
        app, ("GET", "/api/v1/market/depth?symbol=BTCUSDT-PERP&symbol=ETHUSDT-PERP", {}),
        ("GET", "/api/v1/keys", {"headers": {"X-Account-Id": "²".encode("latin-1")}}),
        ("GET", "/api/v1/market/order-cost?symbol=BTCUSDT-PERP&price=50000%0A&leverage=5&quantity=1", {}))
    assert dup.status_code == 400 and dup.json()["code"] == int(Code.DUPLICATE_PARAMETER)
    assert bad_header.status_code == 401
    assert newline.status_code == 400 and newline.json()["code"] == int(Code.BAD_NUMBER), newline.text
    for text in ("1.5\n", "1\n", "-1\n"):
        with pytest.raises(UnitError):
            parse_fixed(text, 8, allow_negative=True)
    assert fapi.CLIENT_ORDER_ID.fullmatch("abc\n") is None and sessions.LOGIN_RE.fullmatch("alice\n") is None


@pytest.mark.parametrize("bad", ["%C2%B2", "%E2%91%A0", "--5", "-1", "%201", "1_0", "%2B5", "5.0"])
def test_native_integer_parameters_go_through_the_strict_parser(bad: str) -> None:
    base = "/api/v1/market/order-cost?symbol=BTCUSDT-PERP&price=50000&quantity=1"
    good, refused, path = calls(limited_app(), ("GET", f"{base}&leverage=5", {}), ("GET", f"{base}&leverage={bad}", {}),
                                ("GET", f"/api/v1/market/candles?symbol=BTCUSDT-PERP&limit={bad}", {}))
    assert good.status_code == 200, good.text
    for answer in (refused, path):
        assert answer.status_code == 400 and answer.json()["code"] == int(Code.MALFORMED), answer.text
    assert v1.LeverageBody(symbol="X", leverage="5").leverage == 5
    for body_value in (" 5", True, "1_0"):
        with pytest.raises(ValueError, match="leverage"):
            v1.LeverageBody(symbol="X", leverage=body_value)


def test_signed_parameters_twice_are_refused_and_the_query_wins_over_the_body() -> None:
    with pytest.raises(signing.SignatureError) as err:
        signing.split("symbol=ETHUSDT&symbol=BTCUSDT&timestamp=1&signature=" + "0" * 64)
    assert err.value.code == Code.DUPLICATE_PARAMETER
    both, twice = calls(limited_app(), signed("GET", "/fapi/v1/leverageBracket", "symbol=BTCUSDT", "symbol=ETHUSDT"),
                        signed("GET", "/fapi/v1/leverageBracket", "recvWindow=5000", "symbol=ETHUSDT&symbol=BTCUSDT"))
    assert both.status_code == 200 and both.json()["symbol"] == "BTCUSDT", both.text
    assert twice.status_code == 400 and twice.json()["code"] == -1101, twice.text
