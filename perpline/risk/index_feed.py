"""The index price feed: publishes IndexPrice records on prices.index from a pluggable source.

    python -m perpline.risk.index_feed --source random-walk [--seed 7] [--interval-ms 1000]
    python -m perpline.risk.index_feed --source csv:prices.csv   # rows: ts_ms,symbol,price (replayed
                                                                 # with their original spacing)
    python -m perpline.risk.index_feed --source none             # publish nothing (tests feed it)

The random walk (the demo's) starts at each instrument's `index_start` and moves by a seeded
normal step of PERPLINE_INDEX_VOLATILITY (default 0.0005 = 0.05 %) of the price per step, on the
tick grid: deterministic for a seed.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka import Producer
from prometheus_client import Counter, Gauge

from perpline.config import producer_config, settings, topic_map
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.contracts.instruments import load_catalog
from perpline.contracts.units import RATE_SCALE, parse_rate
from perpline.obs import StopFlag, clear_ready, mark_ready, serve_metrics, setup_logging

log = logging.getLogger("perpline.index")
PUBLISHED = Counter("perpline_index_prices_published_total", "index prices published", ["symbol", "source"])
LAST_MS = Gauge("perpline_index_last_published_timestamp_seconds", "when the last index price was published", ["symbol"])
INDEX = Gauge("perpline_index_price_ticks", "the random walk's last index price, in ticks", ["symbol"])


def normal_milli(rng: random.Random) -> int:
    """A standard normal draw in thousandths, in integers: the sum of twelve uniform draws of 0..1000
    less 6000 (Irwin-Hall: mean 0, standard deviation about 1000)."""
    return sum(rng.randint(0, 1000) for _ in range(12)) - 6000


def random_walk(seed: int, volatility_e8: int) -> Iterator[dict[str, str]]:
    """Per step, {symbol: price}: each price moves by a normal step of `volatility_e8` (parts per 1e8) of
    itself, in whole ticks, integers throughout (seeded: the same seed gives the same path)."""
    rng = random.Random(seed)
    catalog = load_catalog()
    ticks = {s: i.index_start_ticks for s, i in catalog.instruments.items() if i.index_start_ticks > 0}
    while True:
        for symbol in ticks:
            draw = ticks[symbol] * volatility_e8 * normal_milli(rng)
            step = draw // (RATE_SCALE * 1000) if draw >= 0 else -((-draw) // (RATE_SCALE * 1000))
            ticks[symbol] = max(1, ticks[symbol] + step)
            INDEX.labels(symbol).set(ticks[symbol])
        yield {s: catalog.instruments[s].format_price(t) for s, t in ticks.items()}


def csv_rows(path: Path) -> Iterator[tuple[int, str, str]]:
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if row and not row[0].startswith("#") and row[0].strip().isdigit():
                yield int(row[0]), row[1].strip(), row[2].strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="perpline index-feed")
    parser.add_argument("--source", default=os.environ.get("PERPLINE_INDEX_SOURCE", "random-walk"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--interval-ms", type=int, default=1000)
    args = parser.parse_args(argv)
    setup_logging("index-feed")
    serve_metrics(None)
    clear_ready()
    producer = Producer(producer_config(settings().kafka_bootstrap))
    topic = topic_map()["prices.index"]
    stopping = StopFlag()

    def publish(symbol: str, price: str, source: str) -> None:
        msg = m.IndexPrice(trace_id="", causation_id=source, ts_ms=int(time.time() * 1000), symbol=symbol, price=price,
                           source=source)
        producer.produce(topic, key=symbol.encode(), value=codec.encode(msg))
        producer.poll(0)
        PUBLISHED.labels(symbol, source).inc()
        LAST_MS.labels(symbol).set(msg.ts_ms / 1000)

    mark_ready()
    if args.source == "random-walk":
        walk = random_walk(args.seed, parse_rate(os.environ.get("PERPLINE_INDEX_VOLATILITY", "0.0005"),
                                                 allow_negative=False, what="PERPLINE_INDEX_VOLATILITY"))
        while not stopping:
            for symbol, price in next(walk).items():
                publish(symbol, price, "random-walk")
            time.sleep(args.interval_ms / 1000)
    elif args.source.startswith("csv:"):
        previous = None
        for ts_ms, symbol, price in csv_rows(Path(args.source[4:])):
            if stopping:
                break
            if previous is not None and ts_ms > previous:
                time.sleep(min(60.0, (ts_ms - previous) / 1000))
            previous = ts_ms
            publish(symbol, price, "csv")
    else:
        while not stopping:  # "none": tests and external feeds write prices.index themselves
            time.sleep(0.2)
    producer.flush(10)


if __name__ == "__main__":
    main()
