"""The order routes' direct path (perpline.api.fastpath) answers exactly as the FastAPI router does.

Each request goes to two apps, one with the fast path and one with it switched off
(PERPLINE_API_FAST_PATH=0), both holding the same API key: status, body and our headers must be equal
byte for byte. The placed-order answers are covered on the real stack (tests/e2e/test_api_contract.py,
the ccxt session), which run through the fast path."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from perpline.api import fapi, fastpath
from perpline.api.app import LATENCY
from tests.unit.test_api_limits import NoTrades, calls, limited_app, signed


def requests() -> list[tuple[str, str, dict[str, Any]]]:
    """Signed now: a signature's timestamp must be within the receive window when the request arrives."""
    return [
        signed("POST", "/fapi/v1/order", "", "symbol=BTCUSDT&side=UP&type=LIMIT&quantity=1&price=50000"),
        signed("POST", "/fapi/v1/order", "", "side=BUY&type=LIMIT&quantity=1&price=50000"),
        signed("POST", "/fapi/v1/order", "", "symbol=NOPEUSDT&side=BUY&type=LIMIT&quantity=1&price=50000"),
        signed("POST", "/fapi/v1/order", "", "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1"),
        signed("POST", "/fapi/v1/order", "", "symbol=BTCUSDT&side=BUY&type=STOP&quantity=1&price=5"),
        signed("POST", "/fapi/v1/order", "", "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=50000&newClientOrderId=a%0A"),
        ("POST", "/fapi/v1/order?symbol=BTCUSDT&timestamp=1&signature=" + "0" * 64, {"headers": {"X-MBX-APIKEY": "k" * 64}}),
        ("POST", "/fapi/v1/order?symbol=BTCUSDT", {}),
        signed("DELETE", "/fapi/v1/order", "symbol=BTCUSDT&orderId=42"),
        signed("DELETE", "/fapi/v1/order", "symbol=BTCUSDT"),
        signed("PUT", "/fapi/v1/order", "", "symbol=BTCUSDT&orderId=42&side=BUY&quantity=1"),
    ]


class NoOrders(NoTrades):
    """A read model in which the caller holds no order."""

    def find_order(self, account_id: int, order_id: int) -> None:
        return None

    def find_client_order(self, account_id: int, client_order_id: str) -> None:
        return None


OURS = ("content-type", "content-length", "x-mbx-used-weight-1m", "retry-after")


def _shape(answer: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    return answer.status_code, answer.content, {h: answer.headers.get(h, "") for h in OURS}


def _both(monkeypatch: pytest.MonkeyPatch, requests: list[tuple[str, str, dict[str, Any]]],
          **limits: int) -> tuple[list[httpx.Response], list[httpx.Response]]:
    fast_app = limited_app(readmodel=NoOrders(), **limits)
    monkeypatch.setenv("PERPLINE_API_FAST_PATH", "0")
    routed_app = limited_app(readmodel=NoOrders(), **limits)
    assert fast_app.state.fast_routes and not routed_app.state.fast_routes
    return calls(fast_app, *requests), calls(routed_app, *requests)


def test_refusals_on_the_fast_path_equal_the_routers_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = requests()
    fast, routed = _both(monkeypatch, sent)
    for request, a, b in zip(sent, fast, routed, strict=True):
        assert _shape(a) == _shape(b), (request[:2], a.text, b.text)
        assert a.status_code >= 400 and a.json()["code"] < 0 and a.headers["X-Trace-Id"], a.text
    codes = [a.json()["code"] for a in fast]
    assert codes[:5] == [-1117, -1102, -1121, -1102, -1116], codes  # side, symbol, unknown symbol, price, type
    assert codes[8] == -2011, codes  # cancel of an order the account does not hold


def test_a_replayed_signed_order_and_the_key_limit_are_refused_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    order, other, third = (signed("POST", "/fapi/v1/order", "", f"symbol=BTCUSDT&side=UP&type=LIMIT&quantity={n}&price=1")
                           for n in (1, 2, 3))
    fast, routed = _both(monkeypatch, [order, order, other, third], key=2)
    for a, b in zip(fast, routed, strict=True):
        assert _shape(a) == _shape(b), (a.text, b.text)
    assert [(a.status_code, a.json()["code"]) for a in fast] == [(400, -1117), (400, -1022), (400, -1117), (429, -1003)]


def test_the_fast_routes_are_the_registered_endpoints_and_are_measured_under_their_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[str] = []
    serve = fastpath.serve

    async def spy(fast: fastpath.FastRoute, *args: Any) -> None:
        served.append(fast.route.path)
        await serve(fast, *args)

    monkeypatch.setattr(fastpath, "serve", spy)
    app = limited_app(readmodel=NoOrders())
    table = app.state.fast_routes
    assert set(table) == set(fastpath.ROUTES)
    assert table[("POST", "/fapi/v1/order")].route.endpoint is fapi.new_order
    before = LATENCY.labels("/fapi/v1/order")._sum.get()  # noqa: SLF001
    calls(app, requests()[0], signed("GET", "/fapi/v1/order", "symbol=BTCUSDT&orderId=1"))
    assert served == ["/fapi/v1/order"]  # the POST; the GET keeps the router
    assert LATENCY.labels("/fapi/v1/order")._sum.get() > before  # noqa: SLF001


def test_an_answer_is_encoded_as_fastapis_json_response_encodes_it() -> None:
    from starlette.responses import JSONResponse

    answer = {"orderId": 12, "symbol": "BTCUSDT", "status": "NEW", "clientOrderId": "pl-a/b:c.d_e-f", "price": "50000.0",
              "reduceOnly": False, "closePosition": True, "goodTillDate": 0, "note": "é ü 中 \u2028 <&> \"q\" \\ \n\t",
              "none": None, "list": [1, "2"]}
    fast = fastpath._json(answer)  # noqa: SLF001
    routed = JSONResponse(answer)
    assert fast.body == routed.body and fast.headers["content-type"] == routed.headers["content-type"]
