"""Market data aggregated as trades stream in: OHLCV candles per interval and the rolling 24-hour
ticker. Integers only (prices in ticks, sizes in lots, amounts in minor units). Pure: the API's read
model feeds it the matcher's trades (and the risk process's marks, for mark-price candles) in stream
order and reads it under its lock.

Bounded: MAX_CANDLES per interval (Binance's largest klines page), so a symbol costs the same memory
after a year as after a day; the day window keeps one bucket per second with trades (at most 86,400),
with running totals and monotonic queues for high and low, so a ticker read is O(1) amortised however
many trades the day had. A trade stamped before the newest candle (a matcher clock that stepped
back) is counted in the newest one: candles never reopen.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

INTERVALS_MS: dict[str, int] = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
    "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000,
    "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000,
}  # Binance's klines intervals except 1M (calendar months are not a fixed length)
MAX_CANDLES = 1500
DAY_MS = 86_400_000
BUCKET_MS = 1000  # the day window's resolution: the ticker's open is the first trade of a second


@dataclass(slots=True)
class Candle:
    open_ms: int
    open_ticks: int
    high_ticks: int
    low_ticks: int
    close_ticks: int
    volume_lots: int = 0
    quote_minor: int = 0
    trades: int = 0
    taker_buy_lots: int = 0
    taker_buy_quote_minor: int = 0
    first_trade_id: int = 0
    last_trade_id: int = 0

    def add(self, price_ticks: int, lots: int, quote_minor: int, taker_buy: bool, trade_id: int) -> None:
        self.high_ticks = max(self.high_ticks, price_ticks)
        self.low_ticks = min(self.low_ticks, price_ticks)
        self.close_ticks = price_ticks
        self.volume_lots += lots
        self.quote_minor += quote_minor
        self.trades += 1 if lots else 0
        if taker_buy:
            self.taker_buy_lots += lots
            self.taker_buy_quote_minor += quote_minor
        self.last_trade_id = trade_id or self.last_trade_id


def _open(start_ms: int, price_ticks: int, trade_id: int) -> Candle:
    return Candle(start_ms, price_ticks, price_ticks, price_ticks, price_ticks, first_trade_id=trade_id,
                  last_trade_id=trade_id)


class CandleSeries:
    """The candles of one interval, oldest first, at most `max_candles` of them."""

    def __init__(self, interval_ms: int, max_candles: int = MAX_CANDLES) -> None:
        assert interval_ms > 0 and max_candles > 0
        self.interval_ms = interval_ms
        self.candles: deque[Candle] = deque(maxlen=max_candles)

    def add(self, ts_ms: int, price_ticks: int, lots: int, quote_minor: int, taker_buy: bool = False,
            trade_id: int = 0) -> None:
        assert price_ticks > 0 and lots >= 0 and quote_minor >= 0
        start = ts_ms // self.interval_ms * self.interval_ms
        if not self.candles or start > self.candles[-1].open_ms:
            self.candles.append(_open(start, price_ticks, trade_id))
        self.candles[-1].add(price_ticks, lots, quote_minor, taker_buy, trade_id)

    def window(self, start_ms: int | None, end_ms: int | None, limit: int) -> list[Candle]:
        """The last `limit` candles opening in [start_ms, end_ms], oldest first (Binance: with only a start,
        the first `limit` from it)."""
        rows = [c for c in self.candles if (start_ms is None or c.open_ms >= start_ms)
                and (end_ms is None or c.open_ms <= end_ms)]
        return rows[:limit] if start_ms is not None and end_ms is None else rows[-limit:]


class CandleSet:
    """One CandleSeries per interval of INTERVALS_MS."""

    def __init__(self, max_candles: int = MAX_CANDLES) -> None:
        self.series = {name: CandleSeries(ms, max_candles) for name, ms in INTERVALS_MS.items()}

    def add(self, ts_ms: int, price_ticks: int, lots: int, quote_minor: int, taker_buy: bool = False,
            trade_id: int = 0) -> None:
        for series in self.series.values():
            series.add(ts_ms, price_ticks, lots, quote_minor, taker_buy, trade_id)


@dataclass(frozen=True, slots=True)
class DayStats:
    open_ms: int
    open_ticks: int
    high_ticks: int
    low_ticks: int
    last_ticks: int
    last_lots: int
    volume_lots: int
    quote_minor: int
    trades: int
    first_trade_id: int
    last_trade_id: int


class RollingDay:
    """The last 24 hours of trades in one-second buckets, with running sums and monotonic queues of
    (bucket start, high) and (bucket start, low): the 24h ticker without rescanning the day."""

    def __init__(self, window_ms: int = DAY_MS, bucket_ms: int = BUCKET_MS) -> None:
        self.window_ms, self.bucket_ms = window_ms, bucket_ms
        self.buckets: deque[Candle] = deque(maxlen=window_ms // bucket_ms + 1)
        self.highs: deque[tuple[int, int]] = deque()
        self.lows: deque[tuple[int, int]] = deque()
        self.volume_lots = self.quote_minor = self.trades = 0
        self.last_lots = 0

    def add(self, ts_ms: int, price_ticks: int, lots: int, quote_minor: int, trade_id: int = 0) -> None:
        start = ts_ms // self.bucket_ms * self.bucket_ms
        if self.buckets and start < self.buckets[-1].open_ms:
            start = self.buckets[-1].open_ms  # never reopen a past second
        self.evict(start)
        if not self.buckets or start > self.buckets[-1].open_ms:
            if len(self.buckets) == self.buckets.maxlen:
                self._drop_oldest()
            self.buckets.append(_open(start, price_ticks, trade_id))
        self.buckets[-1].add(price_ticks, lots, quote_minor, False, trade_id)
        self.volume_lots += lots
        self.quote_minor += quote_minor
        self.trades += 1
        self.last_lots = lots
        while self.highs and self.highs[-1][1] <= price_ticks:
            self.highs.pop()
        self.highs.append((start, price_ticks))
        while self.lows and self.lows[-1][1] >= price_ticks:
            self.lows.pop()
        self.lows.append((start, price_ticks))

    def evict(self, now_ms: int) -> None:
        """Forget the buckets that opened 24 hours or more before `now_ms`."""
        while self.buckets and self.buckets[0].open_ms <= now_ms - self.window_ms:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        gone = self.buckets.popleft()
        self.volume_lots -= gone.volume_lots
        self.quote_minor -= gone.quote_minor
        self.trades -= gone.trades
        for queue in (self.highs, self.lows):
            while queue and queue[0][0] <= gone.open_ms:
                queue.popleft()

    def stats(self, now_ms: int) -> DayStats | None:
        """The window ending at `now_ms`, or None when it holds no trade."""
        self.evict(now_ms)
        if not self.buckets:
            return None
        first, last = self.buckets[0], self.buckets[-1]
        return DayStats(first.open_ms, first.open_ticks, self.highs[0][1], self.lows[0][1], last.close_ticks,
                        self.last_lots, self.volume_lots, self.quote_minor, self.trades, first.first_trade_id,
                        last.last_trade_id)
