"""Bounded memory that forgets only what is finished.

The risk process remembers liquidation attempts it sent (with the insurance-fund cover reserved for
them) and the liquidation orders the accounts processor reported closed. Wiping such a table when it
grows too big would also drop what is still in flight: a reserved cover (the fund would be promised
twice) or the word that an attempt closed (the next attempt would wait for a timeout instead).
`FinishedFirst` keeps entries in the order they were last written and, once past its bound, forgets
the oldest entries the caller calls finished, down to 90 % of the bound. Entries still in flight are
kept even past the bound: there are at most as many as open positions, which are bounded elsewhere
(perpline.risk.liquidations.MAX_POSITIONS_PER_SYMBOL).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
log = logging.getLogger("perpline.risk")
LOW_WATER_PERCENT = 90  # a sweep forgets down to this share of the bound, so sweeps are rare


class FinishedFirst(Generic[K, V]):
    def __init__(self, bound: int) -> None:
        assert bound >= 10, "a bound this small would sweep on every write"
        self.bound = bound
        self._items: OrderedDict[K, V] = OrderedDict()
        self._sweep_above = bound  # the size that triggers the next sweep

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __setitem__(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)

    def get(self, key: K, default: V) -> V:
        return self._items.get(key, default)

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(self._items.items())

    def forget_finished(self, finished: Callable[[K, V], bool]) -> int:
        """Past the bound: forget the oldest finished entries down to LOW_WATER_PERCENT of it; returns how
        many were forgotten. When too much is in flight to get there, the next sweep waits for another
        tenth of the bound of writes (a sweep reads every entry: it must not run on every write)."""
        if len(self._items) <= self._sweep_above:
            return 0
        target = self.bound * LOW_WATER_PERCENT // 100
        forgotten = 0
        for key in list(self._items):  # oldest first
            if len(self._items) <= target:
                break
            if finished(key, self._items[key]):
                del self._items[key]
                forgotten += 1
        self._sweep_above = max(self.bound, len(self._items) + self.bound // 10)
        if len(self._items) > self.bound:
            log.warning("memory past its bound: every entry is still in flight",
                        extra={"entries": len(self._items), "bound": self.bound})
        return forgotten
