"""A new API replica starts from the newest read-model checkpoint, not from offset 0, and serves exactly
what the long-running replica serves: balances, positions, orders (open and all), fills, book, trades,
mark and candles, after trading before and after the checkpoint; an order sent to it right after it
is ready is answered settled (nothing between the checkpoint and live consumption is missed)."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from stackutil import Stack, api_replica, running_stack
from test_security_replay import native_post, send, signed_get, user

pytestmark = pytest.mark.e2e
SYM = "BTCUSDT-PERP"
CHECKPOINT_EVENTS = 30  # small, so trading writes one in seconds


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory, {"PERPLINE_TRUST_ACCOUNT_HEADER": "0", "PERPLINE_FAUCET": "0",
                                                "PERPLINE_API_CHECKPOINT_EVENTS": str(CHECKPOINT_EVENTS)})


def metric(api: str, name: str) -> float:
    text = httpx.get(api + "/metrics", timeout=10).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def order(api: str, keys: dict[str, Any], side: str, price: str, qty: str, tif: str = "GTC") -> dict[str, Any]:
    body = {"symbol": SYM, "side": side, "type": "LIMIT", "time_in_force": tif, "price": price, "quantity": qty}
    response = send(api, native_post(keys, "/api/v1/orders", body))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def trade_round(api: str, maker: dict[str, Any], taker: dict[str, Any], base: int) -> None:
    """Resting asks, one crossed by an IOC buy, one left resting, one cancelled."""
    for i in range(3):
        order(api, maker, "SELL", f"{base + i}.0", "0.010")
    assert order(api, taker, "BUY", f"{base}.0", "0.010", "IOC")["order"]["status"] == "FILLED"
    order(api, taker, "BUY", f"{base - 100}.0", "0.005")
    doomed = order(api, maker, "SELL", f"{base + 50}.0", "0.010")["order_id"]
    cancelled = signed_delete(api, maker, f"/api/v1/orders/{doomed}", {"symbol": SYM})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELED", cancelled.text


def signed_delete(api: str, keys: dict[str, Any], path: str, params: dict[str, Any]) -> httpx.Response:
    text = urlencode({**params, "timestamp": int(time.time() * 1000), "recvWindow": 10000})
    signature = hmac.new(keys["api_secret"].encode(), text.encode(), hashlib.sha256).hexdigest()
    return httpx.delete(f"{api}{path}?{text}&signature={signature}", headers={"X-MBX-APIKEY": keys["api_key"]},
                        timeout=30)


def views(api: str, people: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n, keys in enumerate(people):
        out[f"{n}.balances"] = signed_get(api, keys, "/api/v1/account/balances")
        out[f"{n}.positions"] = signed_get(api, keys, "/api/v1/account/positions")
        out[f"{n}.open"] = signed_get(api, keys, "/api/v1/orders")
        out[f"{n}.all"] = signed_get(api, keys, "/api/v1/orders", {"status": "all"})
        out[f"{n}.fills"] = signed_get(api, keys, "/api/v1/account/trades")
    for path in ("/api/v1/market/depth", "/api/v1/market/trades", "/api/v1/market/candles?interval=1m"):
        joiner = "&" if "?" in path else "?"
        out[path] = httpx.get(f"{api}{path}{joiner}symbol={SYM}", timeout=10).json()
    mark = httpx.get(f"{api}/api/v1/market/mark?symbol={SYM}", timeout=10)
    out["mark"] = (mark.status_code, mark.json().get("mark_price"))
    return out


def settled_views(api: str, replica: str, people: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both replicas' views once they agree (each consumes on its own: a few ms apart), or the last pair."""
    deadline = time.monotonic() + 20
    while True:
        mine, theirs = views(replica, people), views(api, people)
        if mine == theirs or time.monotonic() > deadline:
            return mine, theirs
        time.sleep(0.3)


def test_a_replica_started_from_a_checkpoint_serves_what_the_replica_that_replayed_serves(stack: Stack) -> None:
    api = stack.api
    maker, taker = user(stack, "100000"), user(stack, "100000")
    for k in range(3):
        trade_round(api, maker, taker, 50_000 + 10 * k)
    deadline = time.monotonic() + 60
    while metric(api, "perpline_api_checkpoints_written_total") < 1:
        assert time.monotonic() < deadline, "no read-model checkpoint written"
        time.sleep(0.5)
    trade_round(api, maker, taker, 50_100)  # after the checkpoint: the new replica consumes these from its positions

    with api_replica(stack, {"PERPLINE_API_CHECKPOINT_EVENTS": "0"}) as replica:
        assert metric(replica, "perpline_api_checkpoint_loaded_events") > 0, "the replica replayed from offset 0"
        placed = order(replica, taker, "BUY", "50100.0", "0.010", "IOC")  # crosses the resting ask at once
        assert placed["order"]["status"] == "FILLED" and placed["order"]["filled"] == "0.010"
        mine, theirs = settled_views(api, replica, [maker, taker])
        assert mine == theirs
        assert theirs["0.open"] and theirs["1.fills"] and theirs["/api/v1/market/depth"]["asks"]
