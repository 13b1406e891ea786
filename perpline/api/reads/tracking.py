"""The matcher's word on each recent order (filled lots, resting, finished, amends, the orders it
traded against): what tells a waiting request that the matcher is done with its order.

Bounded to MAX_TRACKED_ORDERS, oldest forgotten first; readers get a copy of one order's state."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from perpline.api.views import MatcherOrder
from perpline.contracts import messages as m
from perpline.contracts.instruments import Instrument

MAX_TRACKED_ORDERS = 200_000
MAX_MAKERS_TRACKED = 1000


class MatcherTracking:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._orders: OrderedDict[int, MatcherOrder] = OrderedDict()

    def apply(self, inst: Instrument, ev: Any) -> None:
        """A matcher event the book mirror accepted (perpline.api.reads.books.BookMirrors.apply)."""
        with self._lock:
            _track(self._orders, inst, ev)

    def items(self) -> Iterator[tuple[int, MatcherOrder]]:
        """Every (order id, state), oldest first: for a checkpoint, on the consumer thread (the only writer)."""
        return iter(self._orders.items())

    def restore(self, orders: OrderedDict[int, MatcherOrder]) -> None:
        with self._lock:
            self._orders = orders

    def newest(self) -> int | None:
        with self._lock:
            return next(reversed(self._orders), None)

    def state(self, order_id: int) -> MatcherOrder | None:
        """A copy of what the matcher said about the order; None when unknown or forgotten."""
        with self._lock:
            found = self._orders.get(order_id)
            return None if found is None else replace(found, makers=list(found.makers))

    def amends(self, order_id: int) -> tuple[int, int]:
        """(amends answered by the matcher, code of the last refused one) for an order."""
        with self._lock:
            found = self._orders.get(order_id)
            return (0, 0) if found is None else (found.amends, found.amend_code)

    def code(self, order_id: int) -> int:
        with self._lock:
            found = self._orders.get(order_id)
            return 0 if found is None else found.code


def _track(tracked: OrderedDict[int, MatcherOrder], inst: Instrument, ev: Any) -> None:
    if isinstance(ev, m.OrderAccepted):
        tracked[ev.order_id] = MatcherOrder()
        while len(tracked) > MAX_TRACKED_ORDERS:
            tracked.popitem(last=False)
    elif isinstance(ev, m.Trade):
        lots = inst.parse_qty(ev.quantity)
        taker = tracked.get(ev.taker_order_id)
        if taker is not None and len(taker.makers) < MAX_MAKERS_TRACKED:
            taker.makers.append((ev.maker_account_id, ev.maker_order_id))
        for order_id, leaves in ((ev.taker_order_id, ev.taker_leaves), (ev.maker_order_id, ev.maker_leaves)):
            state = tracked.get(order_id)
            if state is not None:
                state.filled_lots += lots
                state.done = state.done or inst.parse_qty(leaves, allow_zero=True) == 0
    elif isinstance(ev, m.OrderRested):
        state = tracked.get(ev.order_id)
        if state is not None:
            state.rested = True
    elif isinstance(ev, (m.OrderAmended, m.AmendRejected)):
        state = tracked.get(ev.order_id)
        if state is not None:
            state.amends += 1
            state.amend_code = ev.code if isinstance(ev, m.AmendRejected) else 0
            if isinstance(ev, m.OrderAmended):
                state.terms = (ev.price, ev.quantity)
    elif isinstance(ev, (m.OrderCancelled, m.OrderExpired, m.OrderRejected)):
        state = tracked.get(ev.order_id)
        if state is None and isinstance(ev, m.OrderRejected):
            state = tracked[ev.order_id] = MatcherOrder()
        if state is not None:
            state.done = True
            state.code = ev.code
