"""Binance's paging of histories (userTrades fromId, allOrders orderId): forward from an id, else the newest."""

from __future__ import annotations

from perpline.api.fapi import _page


def test_from_an_id_the_oldest_page_else_the_newest() -> None:
    items = list(range(10, 20))
    assert _page(items, 10, {"limit": "3"}) == [10, 11, 12]  # a client pages forward with the last id + 1
    assert _page(items, None, {"limit": "3"}) == [17, 18, 19]
    assert _page(items, 0, {}) == items  # the default limit (500) holds them all
