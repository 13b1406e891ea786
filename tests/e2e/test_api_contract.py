"""Contract tests generated from the API's own OpenAPI schema (schemathesis) against the real stack:
whatever the input, no 5xx, the status code is one the schema documents, and the body matches it.

The caller is identified by X-Account-Id (the embedded stack trusts it), so the trading and account
endpoints run their real handlers rather than stopping at authentication.

Then the input limits of issue 16 on the same stack: integer parameters that were 500s, duplicate
parameters, the rate limits shared by /api/v1 and /fapi, and X-Forwarded-For from loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from stackutil import Stack, admin, running_stack

pytestmark = pytest.mark.e2e
EXAMPLES = 12


# Orders per caller per minute, lowered for the rate-limit test below: above the schemathesis run's order
# placements (POST and PUT /orders, EXAMPLES each, from its own X-Account-Id caller) and far below the default.
ORDERS_PER_MIN = 40


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory, {"PERPLINE_RATE_LIMIT_ORDERS": str(ORDERS_PER_MIN)})


@pytest.fixture(scope="module")
def user(stack: Stack) -> int:
    made = admin(stack, "create-user", "--deposit", "USDT=100000")
    assert isinstance(made, dict)
    return int(made["user_id"])


def test_every_operation_keeps_its_contract(stack: Stack, user: int) -> None:
    """Each operation of /openapi.json gets EXAMPLES generated requests (schemathesis' pytest plugin
    does not load under this pytest, so the operations are driven with Hypothesis directly)."""
    schema = schemathesis.openapi.from_url(f"{stack.api}/openapi.json")
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=stack.api, headers={"X-Account-Id": str(user)}, timeout=30,
                                   checks=[not_a_server_error, status_code_conformance, response_schema_conformance])

        try:
            call()
        except BaseException as failure:  # noqa: BLE001 (collect every failure, then report all; hypothesis raises a group)
            failures[operation.label] = str(failure)[:1500]
    assert operations > 30
    assert not failures, "\n\n".join(f"{label}:\n{why}" for label, why in failures.items())


def fapi(base: str, method: str, path: str, keys: dict[str, Any] | None, params: dict[str, str]) -> httpx.Response:
    """A /fapi request; signed (timestamp + HMAC-SHA256, in the form body for POST) when keys are given."""
    if keys is None:
        return httpx.request(method, f"{base}{path}?{urlencode(params)}", timeout=30)
    text = urlencode({**params, "timestamp": int(time.time() * 1000)})
    text += "&signature=" + hmac.new(keys["api_secret"].encode(), text.encode(), hashlib.sha256).hexdigest()
    headers = {"X-MBX-APIKEY": keys["api_key"]}
    if method == "POST":
        return httpx.post(base + path, content=text, timeout=30,
                          headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
    return httpx.request(method, f"{base}{path}?{text}", headers=headers, timeout=30)


def native(base: str, method: str, path: str, keys: dict[str, Any], body: dict[str, Any] | None = None) -> httpx.Response:
    """A signed /api/v1 request: timestamp and signature in the query, signed over query + JSON body."""
    raw = json.dumps(body) if body is not None else ""
    query = urlencode({"timestamp": int(time.time() * 1000)})
    signature = hmac.new(keys["api_secret"].encode(), (query + raw).encode(), hashlib.sha256).hexdigest()
    return httpx.request(method, f"{base}{path}?{query}&signature={signature}", content=raw or None, timeout=30,
                         headers={"X-MBX-APIKEY": keys["api_key"], "Content-Type": "application/json"})


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, Any]:
    made = admin(stack, "create-user", "--deposit", "USDT=1000")
    assert isinstance(made, dict)
    return made


def test_integers_that_were_500s_and_duplicates_get_binance_codes(stack: Stack, keys: dict[str, Any]) -> None:
    cases = [("GET", "/fapi/v1/depth", None, {"symbol": "BTCUSDT", "limit": "²"}),
             ("GET", "/fapi/v1/aggTrades", None, {"symbol": "BTCUSDT", "startTime": "--1"}),
             ("POST", "/fapi/v1/leverage", keys, {"symbol": "BTCUSDT", "leverage": "--5"}),
             ("POST", "/fapi/v1/leverage", keys, {"symbol": "BTCUSDT", "leverage": "²"}),
             ("GET", "/fapi/v1/order", keys, {"symbol": "BTCUSDT", "orderId": "①"})]
    for method, path, who, params in cases:
        answer = fapi(stack.api, method, path, who, params)
        assert (answer.status_code, answer.json()["code"]) == (400, -1100), (path, params, answer.text)
    twice = httpx.get(f"{stack.api}/fapi/v1/depth?symbol=ETHUSDT&symbol=BTCUSDT", timeout=30)
    assert (twice.status_code, twice.json()["code"]) == (400, -1101), twice.text


def test_native_signed_calls_are_weighed_and_share_the_orders_limit_with_fapi(stack: Stack) -> None:
    keys = admin(stack, "create-user", "--deposit", "USDT=1000")
    assert isinstance(keys, dict)
    read = native(stack.api, "GET", "/api/v1/account/balances", keys)
    assert read.status_code == 200 and int(read.headers["X-MBX-USED-WEIGHT-1M"]) >= 1, read.headers
    bad_order = {"symbol": "NOPE-PERP", "side": "BUY", "type": "LIMIT", "price": "1", "quantity": "1"}
    statuses, minutes = [], []
    for _ in range(2 * ORDERS_PER_MIN + 2):  # one window holds ORDERS_PER_MIN; a new minute may start midway
        answer = native(stack.api, "POST", "/api/v1/orders", keys, bad_order)
        statuses.append(answer.status_code)
        minutes.append(int(time.time() // 60))
        if answer.status_code == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {400}, statuses
    in_refused_window = sum(1 for minute in minutes[:-1] if minute == minutes[-1])
    assert in_refused_window <= ORDERS_PER_MIN + 1, (in_refused_window, statuses)  # +1: a request at the boundary
    refused_at = time.time()
    assert answer.json()["code"] == 6003 and 1 <= int(answer.headers["Retry-After"]) <= 60, answer.text
    assert int(answer.headers["X-MBX-USED-WEIGHT-1M"]) >= in_refused_window  # every weighed call of this window
    on_fapi = fapi(stack.api, "POST", "/fapi/v1/order", keys, {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                                                "quantity": "0.010", "price": "1000"})
    if int(time.time() // 60) == int(refused_at // 60):  # same window: the key's orders are used up on both APIs
        assert (on_fapi.status_code, on_fapi.json()["code"]) == (429, -1003), on_fapi.text


def test_x_forwarded_for_from_loopback_does_not_choose_the_bucket(stack: Stack) -> None:
    for attempt in range(3):  # a minute boundary between the calls resets the counts: measure again
        started = time.time()
        used = [int(httpx.get(f"{stack.api}/fapi/v1/ping", headers={"X-Forwarded-For": f"10.{attempt}.0.{n}"},
                              timeout=30).headers["X-MBX-USED-WEIGHT-1M"]) for n in range(1, 5)]
        if int(time.time() // 60) == int(started // 60):
            break
    assert used == list(range(used[0], used[0] + 4)), used  # one bucket (the peer's), not one per forged address


def test_signed_fapi_bodies_match_their_documented_models(stack: Stack, keys: dict[str, Any]) -> None:
    """The signed /fapi routes (the generated requests above cannot sign, so they stop at 401) and the
    native reads of an account holding a position and fills: a real session's 200 bodies, each
    validated against its operation in /openapi.json."""
    schema = schemathesis.openapi.from_url(f"{stack.api}/openapi.json")
    maker = admin(stack, "create-user", "--deposit", "USDT=1000")
    assert isinstance(maker, dict)
    last = httpx.get(f"{stack.api}/fapi/v1/trades?symbol=BTCUSDT&limit=1", timeout=30).json()
    price = Decimal(last[-1]["price"] if last else "50000")
    below = str((price * Decimal("0.98")).quantize(Decimal("0.1")))

    def checked(method: str, path: str, who: dict[str, Any], **params: str) -> Any:
        answer = fapi(stack.api, method, path, who, params)
        assert answer.status_code == 200, (method, path, answer.text)
        schema[path][method].validate_response(answer)
        return answer.json()

    checked("POST", "/fapi/v1/leverage", keys, symbol="BTCUSDT", leverage="10")
    checked("POST", "/fapi/v1/order", maker, symbol="BTCUSDT", side="SELL", type="LIMIT", quantity="0.010",
            price=str(price))
    taken = checked("POST", "/fapi/v1/order", keys, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    assert taken["status"] == "FILLED", taken
    resting = checked("POST", "/fapi/v1/order", keys, symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.010",
                      price=below)
    which = {"symbol": "BTCUSDT", "orderId": str(resting["orderId"])}
    checked("PUT", "/fapi/v1/order", keys, **which, side="BUY", quantity="0.020", price=below)
    checked("GET", "/fapi/v1/order", keys, **which)
    assert checked("GET", "/fapi/v1/openOrders", keys, symbol="BTCUSDT")
    assert len(checked("GET", "/fapi/v1/allOrders", keys, symbol="BTCUSDT")) >= 2
    assert checked("DELETE", "/fapi/v1/order", keys, **which)["status"] == "CANCELED"
    checked("POST", "/fapi/v1/order", keys, symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.010", price=below)
    checked("DELETE", "/fapi/v1/allOpenOrders", keys, symbol="BTCUSDT")
    assert checked("GET", "/fapi/v1/userTrades", keys, symbol="BTCUSDT")
    assert checked("GET", "/fapi/v1/income", keys)
    for version in ("v2", "v3"):
        assert checked("GET", f"/fapi/{version}/account", keys)["positions"]
        assert checked("GET", f"/fapi/{version}/balance", keys)
        assert checked("GET", f"/fapi/{version}/positionRisk", keys)
    checked("GET", "/fapi/v1/leverageBracket", keys, symbol="BTCUSDT")
    assert len(checked("GET", "/fapi/v1/leverageBracket", keys)) > 1
    checked("GET", "/fapi/v1/commissionRate", keys, symbol="BTCUSDT")
    for method in ("POST", "PUT", "DELETE"):  # the API key alone, as Binance's user-stream routes
        answer = httpx.request(method, f"{stack.api}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": keys["api_key"]},
                               timeout=30)
        assert answer.status_code == 200, answer.text
        schema["/fapi/v1/listenKey"][method].validate_response(answer)
    for path in ("/api/v1/account/positions", "/api/v1/account/trades", "/api/v1/account/balances", "/api/v1/orders",
                 "/api/v1/account/view", "/api/v1/account/ledger-view", "/api/v1/account/journals",
                 "/api/v1/account/statement", "/api/v1/account/funding", "/api/v1/keys"):  # the same account, native
        answer = native(stack.api, "GET", path, keys)
        assert answer.status_code == 200, (path, answer.text)
        schema[path]["GET"].validate_response(answer)
        assert answer.json() or path in ("/api/v1/orders", "/api/v1/account/funding"), path
