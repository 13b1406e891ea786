"""Each symbol's book mirror as matcher.events tell it: resting orders, levels, level changes by seq,
trades, candles and the rolling day.

One lock for the mirrors; every read under it is bounded by what it returns (the newest `limit`
trades, the changes after a seq walked from the newest end, one reference list of the levels), and
the sorted levels are built once per seq and shared by every reader at that seq."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from copy import copy
from itertools import islice
from typing import Any

from perpline.api.views import BookMirror
from perpline.contracts import messages as m
from perpline.contracts import sequence
from perpline.contracts.instruments import Instrument, load_catalog
from perpline.market.candles import Candle, DayStats

Levels = list[tuple[str, int]]  # (price string, lots), best first


class BookMirrors:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._books: dict[str, BookMirror] = {}
        self._sorted: dict[str, tuple[int, Levels, Levels]] = {}  # symbol -> (seq, bids, asks): built once per seq

    # --- applying (the consumer thread) ----------------------------------------------------------
    def apply(self, ev: Any, only_next: bool = False) -> Instrument | None:
        """Apply a matcher event; its instrument when it was applied (None: a re-emitted event after a
        matcher restart, or an unknown symbol), so the order tracking follows exactly the same events.
        `only_next`: apply it only when it is the symbol's next seq (a pushed event: perpline.api.pushed)."""
        with self._lock:
            book = self._books.get(ev.symbol)
            if book is None:
                book = self._books[ev.symbol] = BookMirror()
            verdict = sequence.accept(book.last_seq, ev.seq)
            if not verdict.apply or (only_next and verdict.kind != sequence.ACCEPT):
                return None
            book.last_seq = verdict.last_seq
            inst = load_catalog().get(ev.symbol)
            if inst is not None:
                _apply(book, inst, ev)
            return inst

    def items(self) -> Iterator[tuple[str, BookMirror]]:
        """Every (symbol, mirror): for a checkpoint, captured on the consumer thread (the only writer)."""
        return iter(self._books.items())

    def restore(self, books: dict[str, BookMirror]) -> None:
        with self._lock:
            self._books = books
            self._sorted = {}

    # --- reading ----------------------------------------------------------------------------------
    def seq(self, symbol: str) -> int:
        """The matcher seq the symbol's mirror is at: the update id of /fapi/v1/depth and its stream."""
        with self._lock:
            book = self._books.get(symbol)
            return 0 if book is None else book.last_seq

    def depth_at(self, symbol: str, limit: int) -> tuple[int, Levels, Levels]:
        """(seq, bids, asks): the best `limit` levels of each side as of matcher seq `seq`."""
        inst = load_catalog().get(symbol)
        assert inst is not None
        with self._lock:
            book = self._books.get(symbol)
            if book is None:
                return 0, [], []
            seq = book.last_seq
            known = self._sorted.get(symbol)
            levels = None if known is not None and known[0] == seq else list(book.levels.items())
        if levels is not None:  # sorted outside the lock, once per seq (a race only sorts twice)
            key = lambda item: inst.parse_price(item[0])  # noqa: E731
            bids = sorted(((p, q) for (s, p), q in levels if s == "BUY"), key=key, reverse=True)
            asks = sorted(((p, q) for (s, p), q in levels if s == "SELL"), key=key)
            known = self._sorted[symbol] = (seq, bids, asks)
        assert known is not None
        return seq, known[1][:limit], known[2][:limit]

    def depth_changes(self, symbol: str, after_seq: int) -> tuple[int, list[tuple[int, str, str, int]]] | None:
        """(current seq, level changes after `after_seq` as (seq, side, price, new total lots)), or None when
        `after_seq` is older than the changes kept: the client must take a new snapshot."""
        with self._lock:
            book = self._books.get(symbol)
            if book is None:
                return (0, []) if after_seq == 0 else None
            oldest = book.changes[0][0] if book.changes else book.last_seq + 1
            if after_seq > book.last_seq or (after_seq < oldest - 1 and len(book.changes) == book.changes.maxlen):
                return None
            fresh = []
            for change in reversed(book.changes):  # from the newest: only what is new is walked
                if change[0] <= after_seq:
                    break
                fresh.append(change)
            return book.last_seq, fresh[::-1]

    def trades(self, symbol: str, limit: int) -> list[m.Trade]:
        """The newest `limit` trades, oldest first."""
        with self._lock:
            book = self._books.get(symbol)
            if book is None:
                return []
            newest = list(islice(reversed(book.trades), limit))
        return newest[::-1]

    def candles(self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int) -> list[Candle]:
        with self._lock:
            book = self._books.get(symbol)
            if book is None:
                return []
            return [copy(c) for c in book.candles.series[interval].window(start_ms, end_ms, limit)]

    def day_stats(self, symbol: str, now_ms: int) -> DayStats | None:
        with self._lock:
            book = self._books.get(symbol)
            return None if book is None else book.day.stats(now_ms)


def _apply(book: BookMirror, inst: Instrument, ev: Any) -> None:
    if isinstance(ev, m.OrderRested):
        book.set_order(ev.order_id, (ev.side, ev.price, inst.parse_qty(ev.leaves)), ev.seq)
    elif isinstance(ev, m.Trade):
        book.trades.append(ev)
        price, lots = inst.parse_price(ev.price), inst.parse_qty(ev.quantity)
        quote = inst.notional(price, lots)
        book.candles.add(ev.ts_ms, price, lots, quote, ev.taker_side == "BUY", ev.trade_id)
        book.day.add(ev.ts_ms, price, lots, quote, ev.trade_id)
        maker = book.resting.get(ev.maker_order_id)
        if maker is not None:
            book.set_order(ev.maker_order_id, (maker[0], maker[1], inst.parse_qty(ev.maker_leaves, allow_zero=True)),
                           ev.seq)
    elif isinstance(ev, (m.OrderCancelled, m.OrderExpired)):
        book.set_order(ev.order_id, None, ev.seq)
    elif isinstance(ev, m.OrderAmended) and ev.order_id in book.resting:
        side, resting_at, _ = book.resting[ev.order_id]
        in_place = resting_at == ev.price  # smaller at the same price: same level (a re-queued order comes back
        leaves = inst.parse_qty(ev.leaves, allow_zero=True)  # with OrderRested)
        book.set_order(ev.order_id, (side, resting_at, leaves) if in_place else None, ev.seq)
