"""Replays across API replicas, on the real stack with a second API process (as Kubernetes runs 2-12):
a signed request acts once for the whole exchange, not once per process, and two Idempotency-Keys are
two requests however long a prefix they share. Signed requests only: the stack trusts no X-Account-Id
and has no faucet; users, keys and money come from `perpline admin`."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from stackutil import Stack, admin, api_replica, running_stack

pytestmark = pytest.mark.e2e
SYM = "BTCUSDT-PERP"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory, {"PERPLINE_TRUST_ACCOUNT_HEADER": "0", "PERPLINE_FAUCET": "0"})


@pytest.fixture(scope="module")
def replica_b(stack: Stack) -> Iterator[str]:
    with api_replica(stack) as url:
        yield url


def user(stack: Stack, usdt: str) -> dict[str, Any]:
    made = admin(stack, "create-user", "--deposit", f"USDT={usdt}")
    assert isinstance(made, dict)
    return made


def _sign(keys: dict[str, Any], text: str) -> str:
    return hmac.new(keys["api_secret"].encode(), text.encode(), hashlib.sha256).hexdigest()


def native_post(keys: dict[str, Any], path: str, body: dict[str, Any], idempotency_key: str | None = None
                ) -> dict[str, Any]:
    """A signed /api/v1 POST as the exact bytes to send (the query signs query + JSON body)."""
    raw = json.dumps(body)
    query = urlencode({"timestamp": int(time.time() * 1000), "recvWindow": 10000})
    headers = {"X-MBX-APIKEY": keys["api_key"], "Content-Type": "application/json"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return {"url": f"{path}?{query}&signature={_sign(keys, query + raw)}", "content": raw, "headers": headers}


def fapi_post(keys: dict[str, Any], path: str, params: dict[str, Any]) -> dict[str, Any]:
    text = urlencode({**params, "timestamp": int(time.time() * 1000), "recvWindow": 10000})
    return {"url": path, "content": f"{text}&signature={_sign(keys, text)}",
            "headers": {"X-MBX-APIKEY": keys["api_key"], "Content-Type": "application/x-www-form-urlencoded"}}


def send(api: str, request: dict[str, Any]) -> httpx.Response:
    return httpx.post(api + request["url"], content=request["content"], headers=request["headers"], timeout=30)


def signed_get(api: str, keys: dict[str, Any], path: str, params: dict[str, Any] | None = None) -> Any:
    text = urlencode({**(params or {}), "timestamp": int(time.time() * 1000)})
    response = httpx.get(f"{api}{path}?{text}&signature={_sign(keys, text)}", headers={"X-MBX-APIKEY": keys["api_key"]},
                         timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def usdt_available(api: str, keys: dict[str, Any]) -> str:
    balances = signed_get(api, keys, "/api/v1/account/balances")
    return next(b["available"] for b in balances if b["asset"] == "USDT")


def test_a_signed_withdrawal_replayed_on_another_replica_is_refused(stack: Stack, replica_b: str) -> None:
    alice = user(stack, "100")
    withdrawal = native_post(alice, "/api/v1/wallet/withdrawals", {"asset": "USDT", "amount": "1"})
    first = send(stack.api, withdrawal)
    assert first.status_code == 200, first.text
    replay = send(replica_b, withdrawal)  # byte for byte, to the other API process
    assert replay.status_code == 400 and replay.json()["code"] == 6007, replay.text  # REPLAYED_REQUEST
    assert usdt_available(replica_b, alice) == usdt_available(stack.api, alice) == "99.00000000"


def test_an_idempotent_retry_on_another_replica_gets_the_first_answer(stack: Stack, replica_b: str) -> None:
    """Same Idempotency-Key: re-signed (a client's retry) or replayed byte for byte, it is the first
    withdrawal's answer and money moves once."""
    bob = user(stack, "100")
    first = native_post(bob, "/api/v1/wallet/withdrawals", {"asset": "USDT", "amount": "1"}, "bob-w-1")
    assert send(stack.api, first).status_code == 200
    time.sleep(0.002)  # a new timestamp: a new signature
    resigned = send(replica_b, native_post(bob, "/api/v1/wallet/withdrawals", {"asset": "USDT", "amount": "1"}, "bob-w-1"))
    assert resigned.status_code == 200 and resigned.json()["request_id"] == "bob-w-1", resigned.text
    replayed = send(replica_b, first)
    assert replayed.status_code in (200, 400), replayed.text
    assert usdt_available(replica_b, bob) == usdt_available(stack.api, bob) == "99.00000000"


def test_a_signed_fapi_order_replayed_on_another_replica_places_one_order(stack: Stack, replica_b: str) -> None:
    carol = user(stack, "1000")
    order = fapi_post(carol, "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                                "timeInForce": "GTC", "price": "50000", "quantity": "0.002"})
    first = send(stack.api, order)
    assert first.status_code == 200, first.text
    replay = send(replica_b, order)
    assert replay.status_code == 400 and replay.json()["code"] == -1022, replay.text  # the signature was used
    for api in (stack.api, replica_b):
        opened = signed_get(api, carol, "/fapi/v1/openOrders", {"symbol": "BTCUSDT"})
        assert [o["orderId"] for o in opened] == [first.json()["orderId"]]


def test_long_idempotency_keys_sharing_a_prefix_are_two_orders(stack: Stack) -> None:
    dave = user(stack, "1000")
    prefix = "P-order-" + "shared-prefix-of-forty-characters-------"
    placed = []
    for suffix, quantity in (("1", "0.002"), ("2", "0.003")):
        body = {"symbol": SYM, "side": "BUY", "type": "LIMIT", "price": "50000", "quantity": quantity}
        response = send(stack.api, native_post(dave, "/api/v1/orders", body, prefix + suffix))
        assert response.status_code == 200, response.text
        placed.append(response.json()["order"])
    assert placed[0]["order_id"] != placed[1]["order_id"]
    assert [o["quantity"] for o in placed] == ["0.002", "0.003"]
    assert placed[0]["client_order_id"] != placed[1]["client_order_id"]
    opened = signed_get(stack.api, dave, "/api/v1/orders", {"symbol": SYM})
    assert sorted(o["quantity"] for o in opened) == ["0.002", "0.003"]
