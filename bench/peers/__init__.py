"""PyPI matching engines driven with exactly `bench.matcher.flow`, for `python -m bench.matcher`.

Each adapter module exposes `run(commands) -> dict` with the keys of `Result`: throughput over the
timed drive only, traded volume as reported by the engine (fill callbacks or return values), the
final resting book read back from the engine and aggregated per price level, and notes on any
semantic difference or emulation. Peer packages are imported lazily inside `run()`; install them
from bench/requirements-peers.lock into `.venv-bench`, never into the product environment.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterable
from typing import Any

Flow = list[tuple[int, int, int, int, int]]
Result = dict[str, Any]  # ops_per_s: float, volume_lots: int, book: [[side, price, qty]], notes: str

PEERS: dict[str, str] = {
    "liquibook": "bench.peers.liquibook",
    "lightmatchingengine": "bench.peers.lightmatchingengine",
    "orderly_chaos": "bench.peers.orderly_chaos",
    "litebook": "bench.peers.litebook",
    "pyorderbook": "bench.peers.pyorderbook",
    "akhil4n_orderbook": "bench.peers.akhil4n_orderbook",
    "cython_orderbook": "bench.peers.cython_orderbook",
}


def run_peer(name: str, commands: Flow) -> Result:
    result: Result = importlib.import_module(PEERS[name]).run(commands)
    return result


def levels(side: str, entries: Iterable[tuple[int, int]]) -> list[list[Any]]:
    """Aggregate (price, open qty) pairs into [side, price, total] levels, dropping empty ones."""
    totals: dict[int, int] = {}
    for price, qty in entries:
        totals[price] = totals.get(price, 0) + qty
    return [[side, p, q] for p, q in totals.items() if q]


def result(commands: Flow, elapsed: float, volume: int, book: list[list[Any]], notes: str) -> Result:
    return {"ops_per_s": len(commands) / elapsed, "volume_lots": int(volume), "book": sorted(book), "notes": notes}


def naive_reference(commands: Flow) -> Result:
    """The oracle: bench/naive_book.NaiveBook driven the same way, in the same result shape."""
    from bench.naive_book import NaiveBook

    book = NaiveBook()
    started = time.perf_counter()
    for kind, oid, is_buy, price, qty in commands:
        if kind == 1:
            book.cancel(oid)
        else:
            book.place(oid, bool(is_buy), price, qty, rest=kind == 0)
    elapsed = time.perf_counter() - started
    out = levels("B", ((p, e[2]) for p, q in book.bids.items() for e in q))
    out += levels("S", ((p, e[2]) for p, q in book.asks.items() for e in q))
    return result(commands, elapsed, book.volume_lots, out, "reference: bench/naive_book.NaiveBook")
