"""Positions ordered by liquidation price, per symbol, so a mark move touches only what it crosses.

    book = LiquidationBook()
    book.upsert(account=7, size_lots=10, liq_ticks=450_000, version=3)
    book.crossed(mark_ticks=449_000)   # -> [(7, 3)] in O(log N + k)

Longs are liquidated when the mark falls to or below their price, shorts when it rises to or above:
two sorted arrays of (liq_ticks, account); a tick bisects each once and reads the k crossed entries.
An update is a bisect plus one array insert/delete (a memmove: fast even at a million entries).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort

MAX_POSITIONS_PER_SYMBOL = 5_000_000


class LiquidationBook:
    def __init__(self) -> None:
        self.longs: list[tuple[int, int]] = []  # ascending (liq_ticks, account)
        self.shorts: list[tuple[int, int]] = []
        self.where: dict[int, tuple[bool, int, int]] = {}  # account -> (is_long, liq_ticks, version)

    def __len__(self) -> int:
        return len(self.where)

    def upsert(self, account: int, size_lots: int, liq_ticks: int, version: int) -> None:
        self.remove(account)
        if size_lots == 0 or liq_ticks <= 0:
            return  # flat, or a long that no price can liquidate
        assert len(self.where) < MAX_POSITIONS_PER_SYMBOL, "liquidation book full"
        is_long = size_lots > 0
        insort(self.longs if is_long else self.shorts, (liq_ticks, account))
        self.where[account] = (is_long, liq_ticks, version)

    def remove(self, account: int) -> None:
        found = self.where.pop(account, None)
        if found is None:
            return
        is_long, liq_ticks, _ = found
        side = self.longs if is_long else self.shorts
        i = bisect_left(side, (liq_ticks, account))
        assert side[i] == (liq_ticks, account), "liquidation book out of step"
        del side[i]

    def crossed(self, mark_ticks: int) -> list[tuple[int, int]]:
        """(account, position version) of every position the mark has crossed."""
        out = []
        for _, account in self.longs[bisect_left(self.longs, (mark_ticks, -1)):]:
            out.append((account, self.where[account][2]))
        for _, account in self.shorts[:bisect_right(self.shorts, (mark_ticks, 1 << 62))]:
            out.append((account, self.where[account][2]))
        return out
