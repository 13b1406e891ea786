"""orderly-chaos 0.2.0: C price-time book behind a ctypes API (Meetmendapara09/Orderly-Chaos)."""

from __future__ import annotations

import time

from bench.peers import Flow, Result, levels, result

NOTES = ("C core via ctypes (public LimitOrderBook API, which validates every argument in Python); volume "
         "from the filled quantity limit() returns; no limit-IOC (market() has no price limit): emulated by "
         "limit() then cancel() if the fill was partial; cancel of an id that is no longer resting raises "
         "UnknownOrderIdError, so the adapter asks has() first (engine-side check).")


def run(commands: Flow) -> Result:
    from orderly_chaos import LimitOrderBook, Side

    book = LimitOrderBook()
    limit, cancel, has = book.limit, book.cancel, book.has
    buy, sell = Side.BUY, Side.SELL
    volume = 0
    started = time.perf_counter()
    for kind, oid, is_buy, price, qty in commands:
        if kind == 1:
            if has(oid):
                cancel(oid)
            continue
        filled = limit(buy if is_buy else sell, oid, qty, price)
        volume += filled
        if kind == 2 and filled < qty:
            cancel(oid)
    elapsed = time.perf_counter() - started
    out = levels("B", ((lv.price, lv.volume) for lv in book.depth(buy, 100_000)))
    out += levels("S", ((lv.price, lv.volume) for lv in book.depth(sell, 100_000)))
    return result(commands, elapsed, volume, out, NOTES)
