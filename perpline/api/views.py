"""The read model's views: one account's, the matcher's word on one order, one symbol's book mirror.

Their own module so the read model (perpline.api.readmodel) and its checkpoints
(perpline.api.snapshot) share them without importing each other."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from perpline.contracts import messages as m
from perpline.market.candles import CandleSet, RollingDay

MAX_TRADES_PER_SYMBOL = 10_000
MAX_DEPTH_CHANGES = 20_000  # level changes kept per symbol for incremental depth
MAX_CLOSED_ORDERS_PER_ACCOUNT = 10_000
MAX_FUNDING_PER_ACCOUNT = 1000


@dataclass
class AccountView:
    balances: dict[str, m.BalanceChanged] = field(default_factory=dict)
    open_orders: dict[int, m.OrderView] = field(default_factory=dict)
    closed_orders: OrderedDict[int, m.OrderView] = field(default_factory=OrderedDict)
    positions: dict[str, m.PositionChanged] = field(default_factory=dict)
    fills: deque[m.FillRecorded] = field(default_factory=lambda: deque(maxlen=MAX_CLOSED_ORDERS_PER_ACCOUNT))
    funding: deque[m.FundingApplied] = field(default_factory=lambda: deque(maxlen=MAX_FUNDING_PER_ACCOUNT))
    # what the appended collections already hold: a redelivered event (at-least-once processors re-send
    # what they produced since their last checkpoint after a crash) is applied once
    fill_keys: set[tuple[str, int, int]] = field(default_factory=set)  # (symbol, trade id, order id)
    funding_keys: set[tuple[str, int]] = field(default_factory=set)  # (symbol, funding time)
    client_ids: dict[str, int] = field(default_factory=dict)  # client order id -> newest order id (open or closed)
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)  # this account's alone


@dataclass
class MatcherOrder:
    """What the matcher said about one order: filled lots, resting, finished."""

    filled_lots: int = 0
    rested: bool = False
    done: bool = False
    code: int = 0  # the matcher's result code when it cancelled, expired or rejected the order
    makers: list[tuple[int, int]] = field(default_factory=list)  # (account, order) this order traded against
    amends: int = 0  # amends the matcher answered (applied or refused)
    amend_code: int = 0  # the code of the last refused amend
    terms: tuple[str, str] | None = None  # (price, quantity) of the last applied amend


@dataclass
class BookMirror:
    """The book as matcher.events tell it: resting orders, price levels, and the level changes by seq
    (what /api/v1/market/depth/updates serves after a snapshot)."""

    resting: dict[int, tuple[str, str, int]] = field(default_factory=dict)  # order id -> (side, price, leaves lots)
    levels: dict[tuple[str, str], int] = field(default_factory=dict)  # (side, price) -> lots
    changes: deque[tuple[int, str, str, int]] = field(default_factory=lambda: deque(maxlen=MAX_DEPTH_CHANGES))
    trades: deque[m.Trade] = field(default_factory=lambda: deque(maxlen=MAX_TRADES_PER_SYMBOL))
    candles: CandleSet = field(default_factory=CandleSet)  # from every trade streamed, not only those kept
    day: RollingDay = field(default_factory=RollingDay)
    last_seq: int = 0

    def set_order(self, order_id: int, entry: tuple[str, str, int] | None, seq: int) -> None:
        """The one way the mirror changes: an order now rests as `entry` (side, price, lots), or not at
        all; the levels it leaves and joins are updated and their new totals recorded with `seq`."""
        old = self.resting.pop(order_id, None)
        if old is not None:
            self._level(old[0], old[1], -old[2], seq)
        if entry is not None and entry[2] > 0:
            self.resting[order_id] = entry
            self._level(entry[0], entry[1], entry[2], seq)

    def _level(self, side: str, price: str, delta: int, seq: int) -> None:
        total = self.levels.get((side, price), 0) + delta
        if total > 0:
            self.levels[(side, price)] = total
        else:
            self.levels.pop((side, price), None)
        self.changes.append((seq, side, price, max(total, 0)))


def fill_key(fill: m.FillRecorded) -> tuple[str, int, int]:
    """What makes a fill one fill (a redelivered one has the same key)."""
    return (fill.symbol, fill.trade_id, fill.order_id)


def funding_key(funding: m.FundingApplied) -> tuple[str, int]:
    """What makes a funding payment one payment."""
    return (funding.symbol, funding.funding_time_ms)
