"""A naive price-time book in plain Python: dict of price -> deque of [order_id, account, qty].

The baseline the issue asks for ("surprisingly fast"): no STP, no limits, no events beyond
fills; the benchmark only compares throughput and traded volume with it.
"""

from __future__ import annotations

from collections import deque


class NaiveBook:
    def __init__(self) -> None:
        self.bids: dict[int, deque[list[int]]] = {}
        self.asks: dict[int, deque[list[int]]] = {}
        self.where: dict[int, tuple[bool, int]] = {}
        self.volume_lots = 0

    def place(self, order_id: int, is_buy: bool, price: int, qty: int, rest: bool) -> int:
        book = self.asks if is_buy else self.bids
        while qty and book:
            best = min(book) if is_buy else max(book)
            if (is_buy and best > price) or (not is_buy and best < price):
                break
            level = book[best]
            while qty and level:
                maker = level[0]
                traded = min(qty, maker[2])
                qty -= traded
                maker[2] -= traded
                self.volume_lots += traded
                if maker[2] == 0:
                    level.popleft()
                    del self.where[maker[0]]
            if not level:
                del book[best]
        if qty and rest:
            own = self.bids if is_buy else self.asks
            own.setdefault(price, deque()).append([order_id, 0, qty])
            self.where[order_id] = (is_buy, price)
        return qty

    def cancel(self, order_id: int) -> bool:
        found = self.where.pop(order_id, None)
        if found is None:
            return False
        is_buy, price = found
        book = self.bids if is_buy else self.asks
        level = book[price]
        for entry in level:
            if entry[0] == order_id:
                level.remove(entry)
                break
        if not level:
            del book[price]
        return True
