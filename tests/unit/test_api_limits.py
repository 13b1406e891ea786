"""Request size limits, answered by the API before any handler runs (no broker needed)."""

from __future__ import annotations

import asyncio

import httpx

from perpline.api.app import MAX_BODY_BYTES, MAX_QUERY_BYTES, ApiDeps, create_app


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
