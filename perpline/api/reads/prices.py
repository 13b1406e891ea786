"""The risk process's marks (latest per symbol, and as candles) and the settled funding rounds."""

from __future__ import annotations

import threading
from collections import deque
from copy import copy
from itertools import islice
from typing import Any

from perpline.contracts import messages as m
from perpline.contracts.instruments import load_catalog
from perpline.market.candles import Candle, CandleSet

MAX_FUNDING_ROUNDS = 1000  # per symbol
RECENT_ROUNDS = 16  # a repeated round (pushed, then from the topic; or recorded twice) is among the newest


class Prices:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.marks: dict[str, m.MarkPrice] = {}
        self.mark_candles: dict[str, CandleSet] = {}
        self.rounds: dict[str, deque[m.FundingRound]] = {}

    def apply(self, ev: Any) -> None:
        with self._lock:
            if isinstance(ev, m.MarkPrice):
                self.marks[ev.symbol] = ev
                inst = load_catalog().get(ev.symbol)
                if inst is not None:
                    self.mark_candles.setdefault(ev.symbol, CandleSet()).add(ev.ts_ms, inst.parse_price(ev.mark_price),
                                                                             0, 0)
            elif isinstance(ev, m.FundingRound):
                rounds = self.rounds.setdefault(ev.symbol, deque(maxlen=MAX_FUNDING_ROUNDS))
                if not any(r.funding_time_ms == ev.funding_time_ms for r in islice(reversed(rounds), RECENT_ROUNDS)):
                    rounds.append(ev)  # a round pushed before the topic brought it is there once

    def restore(self, marks: dict[str, m.MarkPrice], mark_candles: dict[str, CandleSet],
                rounds: dict[str, deque[m.FundingRound]]) -> None:
        with self._lock:
            self.marks, self.mark_candles, self.rounds = marks, mark_candles, rounds

    def mark(self, symbol: str) -> m.MarkPrice | None:
        with self._lock:
            return self.marks.get(symbol)

    def funding_rounds(self, symbol: str) -> list[m.FundingRound]:
        """The symbol's settled rounds, oldest first (at most MAX_FUNDING_ROUNDS)."""
        with self._lock:
            return list(self.rounds.get(symbol, ()))

    def candles(self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int) -> list[Candle]:
        with self._lock:
            found = self.mark_candles.get(symbol)
            if found is None:
                return []
            return [copy(c) for c in found.series[interval].window(start_ms, end_ms, limit)]
