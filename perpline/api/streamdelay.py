"""Where a trade's time goes on its way to a stream client, as Prometheus histograms (read by
bench.streams, which subtracts two scrapes of /metrics).

A trade's T is the time of the request that made it (the matcher stamps its events with its input's
time, so a replay is deterministic). Each stage is measured from T:

    matcher   the matcher produced the trade (the matcher.events record's timestamp)
    applied   this API process's read model applied it
    built     the hub built its frames (a tick found it)
    written   the hub handed the frames to every subscriber's socket (the tick's writes ended)

`perpline_fstream_tick_seconds{part}` is the hub's own time per tick: building the frames (`build`)
and writing them (`write`), so the API's CPU per subscriber shows where it goes.
"""

from __future__ import annotations

from prometheus_client import Histogram

BUCKETS_S = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1,
             0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
STAGES = ("matcher", "applied", "built", "written")
TRADE_DELAY = Histogram("perpline_fstream_trade_delay_seconds", "a trade's delay from its T to each stage",
                        ["stage"], buckets=BUCKETS_S)
TICK_SECONDS = Histogram("perpline_fstream_tick_seconds", "the stream hub's time per tick", ["part"],
                         buckets=BUCKETS_S)
_BY_STAGE = {stage: TRADE_DELAY.labels(stage) for stage in STAGES}


def trade_at(stage: str, trade_ms: int, now_ms: float) -> None:
    """One trade reached `stage` at `now_ms` (a clock before T counts as no delay)."""
    _BY_STAGE[stage].observe(max(0.0, now_ms - trade_ms) / 1000)
