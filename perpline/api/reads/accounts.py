"""Every account's view as account.events tell it, the index of open positions by symbol, and the
numbered feed of applied events the user-data streams follow.

Locks: each account's collections are guarded by that account's own lock (AccountView.lock), so a
request that reads one account's history never holds up the consumer applying another account's
events; the position index and the feed have one small lock each, held for O(1) work per event.
Readers take what they need, not the whole view: a balance or position frame copies no closed order
or fill, and a client order id is found by an index, not by walking the closed orders."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from decimal import Decimal
from itertools import islice
from typing import Any, TypeVar

from perpline.accounts.order_status import OPEN
from perpline.api.views import MAX_CLOSED_ORDERS_PER_ACCOUNT, AccountView, fill_key, funding_key
from perpline.contracts import messages as m

T = TypeVar("T")
MAX_ACCOUNT_FEED = 100_000  # applied account events kept for the user-data streams (perpline.api.fstream)


class AccountFeed:
    """The account events the views applied (redeliveries left out), numbered from 1, bounded."""

    def __init__(self, max_events: int = MAX_ACCOUNT_FEED) -> None:
        self._lock = threading.Lock()
        self._events: deque[tuple[int, Any]] = deque(maxlen=max_events)
        self._n = 0

    def append(self, ev: Any) -> None:
        with self._lock:
            self._n += 1
            self._events.append((self._n, ev))

    def after(self, after: int) -> tuple[int, list[Any] | None]:
        """(newest number, the events numbered after `after`); None for the events when some of them
        were already forgotten: the reader lost events and starts over. Copies only the new events."""
        with self._lock:
            if after > self._n or (self._events and self._events[0][0] > after + 1):
                return self._n, None
            fresh = self._n - after
            newest = [ev for _, ev in islice(reversed(self._events), fresh)]
            return self._n, newest[::-1]


class AccountViews:
    def __init__(self) -> None:
        self._views: dict[int, AccountView] = {}  # written by the consumer thread only; a get is atomic
        self._index_lock = threading.Lock()
        self._open_positions: dict[str, dict[int, m.PositionChanged]] = {}  # symbol -> account -> open position
        self.feed = AccountFeed()

    # --- applying (the consumer thread) ----------------------------------------------------------
    def apply(self, ev: Any) -> None:
        view = self._views.get(ev.account_id)
        if view is None:
            view = self._views[ev.account_id] = AccountView()
        with view.lock:
            applied = _apply(view, ev)
            shown = view.positions.get(ev.symbol) if isinstance(ev, m.PositionChanged) else None
        if shown is not None:  # the index holds what the view shows (an equal version re-sets it too)
            self._index(shown)
        if applied:
            self.feed.append(ev)

    def _index(self, pos: m.PositionChanged) -> None:
        with self._index_lock:
            held = self._open_positions.setdefault(pos.symbol, {})
            if is_open(pos):
                held[pos.account_id] = pos
            else:
                held.pop(pos.account_id, None)

    def items(self) -> Iterator[tuple[int, AccountView]]:
        """Every (account, view): for a checkpoint, captured on the consumer thread (the only writer)."""
        return iter(self._views.items())

    def restore(self, views: dict[int, AccountView]) -> None:
        """Start from a checkpoint's views (before the consumer thread runs); the indexes are rebuilt."""
        self._views = views
        index: dict[str, dict[int, m.PositionChanged]] = {}
        for account_id, view in views.items():
            view.client_ids = {o.client_order_id: o.order_id for o in (*view.closed_orders.values(),
                                                                       *view.open_orders.values())
                               if o.client_order_id}
            for pos in view.positions.values():
                if is_open(pos):
                    index.setdefault(pos.symbol, {})[account_id] = pos
        with self._index_lock:
            self._open_positions = index

    # --- reading ----------------------------------------------------------------------------------
    def _read(self, account_id: int, take: Callable[[AccountView], T], empty: T) -> T:
        view = self._views.get(account_id)
        if view is None:
            return empty
        with view.lock:
            return take(view)

    def balances(self, account_id: int) -> dict[str, m.BalanceChanged]:
        return self._read(account_id, lambda v: dict(v.balances), {})

    def positions(self, account_id: int) -> dict[str, m.PositionChanged]:
        return self._read(account_id, lambda v: dict(v.positions), {})

    def open_orders(self, account_id: int) -> list[m.OrderView]:
        """The open orders (bounded by the accounts processor's open-order limit)."""
        return self._read(account_id, lambda v: list(v.open_orders.values()), [])

    def closed_orders(self, account_id: int) -> list[m.OrderView]:
        """The closed orders kept (at most MAX_CLOSED_ORDERS_PER_ACCOUNT), oldest first: one account's
        list of references, under that account's lock only (filtering is the caller's, outside it)."""
        return self._read(account_id, lambda v: list(v.closed_orders.values()), [])

    def fills(self, account_id: int) -> list[m.FillRecorded]:
        return self._read(account_id, lambda v: list(v.fills), [])

    def funding(self, account_id: int) -> list[m.FundingApplied]:
        return self._read(account_id, lambda v: list(v.funding), [])

    def find_order(self, account_id: int, order_id: int) -> m.OrderView | None:
        return self._read(account_id, lambda v: v.open_orders.get(order_id) or v.closed_orders.get(order_id), None)

    def find_client_order(self, account_id: int, client_order_id: str) -> m.OrderView | None:
        """The newest of the account's orders (open or closed) with this client order id."""
        def take(v: AccountView) -> m.OrderView | None:
            order_id = v.client_ids.get(client_order_id)
            return None if order_id is None else v.open_orders.get(order_id) or v.closed_orders.get(order_id)
        return self._read(account_id, take, None)

    def copy(self, account_id: int) -> AccountView:
        """The whole view, copied (tests and tools: a request reads only the parts it needs)."""
        def take(v: AccountView) -> AccountView:
            return AccountView(dict(v.balances), dict(v.open_orders), v.closed_orders.copy(), dict(v.positions),
                               v.fills.copy(), v.funding.copy())
        return self._read(account_id, take, None) or AccountView()

    def open_positions(self, symbol: str) -> list[m.PositionChanged]:
        """Every account's open position in `symbol` (the ADL ranking), from the index kept as they change."""
        with self._index_lock:
            return list(self._open_positions.get(symbol, {}).values())


def is_open(pos: m.PositionChanged) -> bool:
    return pos.size.lstrip("-").strip("0.") != ""


def _apply(view: AccountView, ev: Any) -> bool:
    """Apply one account event to its view (its lock held); False when it changed nothing (a redelivery)."""
    if isinstance(ev, m.BalanceChanged):
        known = view.balances.get(ev.asset)
        applied = known is None or ev.version > known.version  # an older version is a redelivery
        if applied or ev.version == known.version:  # type: ignore[union-attr]
            view.balances[ev.asset] = ev
        return applied
    if isinstance(ev, m.OrderChanged):
        return _apply_order(view, ev.order)
    if isinstance(ev, m.PositionChanged):
        known_position = view.positions.get(ev.symbol)
        applied = known_position is None or ev.version > known_position.version
        if applied or ev.version == known_position.version:  # type: ignore[union-attr]
            view.positions[ev.symbol] = ev
        return applied
    if isinstance(ev, m.FillRecorded):
        return _append_once(view.fills, view.fill_keys, fill_key, ev)
    if isinstance(ev, m.FundingApplied):
        return _append_once(view.funding, view.funding_keys, funding_key, ev)
    return False


def _apply_order(view: AccountView, order: m.OrderView) -> bool:
    """An order's latest state; a redelivered older state (open for an order already closed here, or
    less filled than what is shown) is ignored, so a view never steps back. Timestamps do not order an
    order's changes: a cancel is stamped by the API when sent, a fill may be applied before it."""
    if order.status in OPEN:
        if order.order_id in view.closed_orders:
            return False
        shown = view.open_orders.get(order.order_id)
        if shown is not None and Decimal(order.filled) < Decimal(shown.filled):
            return False
        view.open_orders[order.order_id] = order
        _name(view, order)
        return shown != order
    changed = view.closed_orders.get(order.order_id) != order
    view.open_orders.pop(order.order_id, None)
    view.closed_orders[order.order_id] = order
    _name(view, order)
    while len(view.closed_orders) > MAX_CLOSED_ORDERS_PER_ACCOUNT:
        _, gone = view.closed_orders.popitem(last=False)
        if view.client_ids.get(gone.client_order_id) == gone.order_id:
            del view.client_ids[gone.client_order_id]
    return changed


def _name(view: AccountView, order: m.OrderView) -> None:
    """Index the order's client id; an older order redelivered does not take a newer one's name."""
    if order.client_order_id and order.order_id >= view.client_ids.get(order.client_order_id, 0):
        view.client_ids[order.client_order_id] = order.order_id


def _append_once(items: deque[Any], keys: set[Any], key_of: Callable[[Any], Any], item: Any) -> bool:
    """Append an event unless it is already held (False); the key set follows the bounded deque."""
    key = key_of(item)
    if key in keys:
        return False
    if items.maxlen is not None and len(items) == items.maxlen:
        keys.discard(key_of(items[0]))
    items.append(item)
    keys.add(key)
    return True
