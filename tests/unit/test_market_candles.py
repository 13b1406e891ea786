"""Candles and the rolling 24h ticker (perpline.market.candles) against a naive recomputation from the
whole trade list."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from perpline.market.candles import DAY_MS, INTERVALS_MS, CandleSeries, CandleSet, RollingDay

# (ms since the previous trade, price ticks, lots, taker buys)
TRADES = st.lists(st.tuples(st.integers(0, 4 * 3_600_000), st.integers(1, 10**7), st.integers(1, 10**4), st.booleans()),
                  min_size=1, max_size=120)


def timeline(steps: list[tuple[int, int, int, bool]]) -> list[tuple[int, int, int, bool, int]]:
    out, ts = [], 1_700_000_000_000
    for i, (gap, price, lots, buy) in enumerate(steps):
        ts += gap
        out.append((ts, price, lots, buy, i + 1))
    return out


def naive_candles(trades: list[tuple[int, int, int, bool, int]], interval_ms: int) -> list[tuple[int, ...]]:
    buckets: dict[int, list[tuple[int, int, int, bool, int]]] = {}
    for t in trades:
        buckets.setdefault(t[0] // interval_ms * interval_ms, []).append(t)
    rows = []
    for start in sorted(buckets):
        ts = buckets[start]
        prices = [p for _, p, _, _, _ in ts]
        rows.append((start, prices[0], max(prices), min(prices), prices[-1], sum(n for _, _, n, _, _ in ts),
                     sum(p * n for _, p, n, _, _ in ts), len(ts), sum(n for _, _, n, b, _ in ts if b), ts[0][4], ts[-1][4]))
    return rows


def as_rows(series: CandleSeries) -> list[tuple[int, ...]]:
    return [(c.open_ms, c.open_ticks, c.high_ticks, c.low_ticks, c.close_ticks, c.volume_lots, c.quote_minor, c.trades,
             c.taker_buy_lots, c.first_trade_id, c.last_trade_id) for c in series.candles]


@settings(max_examples=150, deadline=None)
@given(TRADES)
def test_every_interval_equals_the_naive_bucketing(steps: list[tuple[int, int, int, bool]]) -> None:
    trades = timeline(steps)
    candles = CandleSet()
    for ts, price, lots, buy, trade_id in trades:
        candles.add(ts, price, lots, price * lots, buy, trade_id)
    for name, interval_ms in INTERVALS_MS.items():
        assert as_rows(candles.series[name]) == naive_candles(trades, interval_ms)[-1500:], name


def test_bounded_and_windowed() -> None:
    series = CandleSeries(60_000, max_candles=3)
    for minute in range(5):
        series.add(minute * 60_000 + 5, 100 + minute, 1, 100 + minute)
    assert [c.open_ms for c in series.candles] == [120_000, 180_000, 240_000]  # the oldest two forgotten
    assert [c.open_ms for c in series.window(None, None, 2)] == [180_000, 240_000]
    assert [c.open_ms for c in series.window(150_000, None, 1)] == [180_000]  # from a start: the first ones
    assert [c.open_ms for c in series.window(None, 200_000, 5)] == [120_000, 180_000]


def test_a_trade_stamped_before_the_newest_candle_counts_in_it() -> None:
    series = CandleSeries(60_000)
    series.add(120_001, 100, 1, 100)
    series.add(60_000, 90, 2, 180)  # the matcher's clock stepped back
    (only,) = series.candles
    assert (only.open_ms, only.low_ticks, only.close_ticks, only.volume_lots, only.trades) == (120_000, 90, 90, 3, 2)


@settings(max_examples=150, deadline=None)
@given(TRADES, st.lists(st.integers(0, 2 * DAY_MS), min_size=1, max_size=5))
def test_rolling_day_equals_a_rescan(steps: list[tuple[int, int, int, bool]], probes: list[int]) -> None:
    trades = timeline(steps)
    day = RollingDay()
    for ts, price, lots, _, trade_id in trades:
        day.add(ts, price, lots, price * lots, trade_id)
    for extra in sorted(probes):
        now = trades[-1][0] + extra
        in_window = [t for t in trades if t[0] // 1000 * 1000 > now - DAY_MS]
        stats = day.stats(now)
        if not in_window:
            assert stats is None
            continue
        assert stats is not None
        prices = [p for _, p, _, _, _ in in_window]
        assert (stats.open_ms, stats.open_ticks, stats.high_ticks, stats.low_ticks, stats.last_ticks) == (
            in_window[0][0] // 1000 * 1000, prices[0], max(prices), min(prices), prices[-1])
        assert (stats.volume_lots, stats.quote_minor, stats.trades) == (
            sum(t[2] for t in in_window), sum(t[1] * t[2] for t in in_window), len(in_window))
        assert (stats.first_trade_id, stats.last_trade_id, stats.last_lots) == (in_window[0][4], in_window[-1][4],
                                                                                 in_window[-1][2])
