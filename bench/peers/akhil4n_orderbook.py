"""akhil4n-orderbook 0.1.1: pure-Python SortedDict book; installs a top-level module named `orderbook`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.peers import Flow, Result, levels, result

NOTES = ("pure Python (sortedcontainers), Decimal-style prices (ints used as given); Order objects "
         "built before the timed loop; volume summed from the Trade records appended to "
         "book.trade_log; no IOC: emulated by add_limit_order then cancel_order if remaining_quantity "
         "> 0. PriceLevel.total_quantity drifts above the true open quantity after fills (measured), "
         "so it is not used to read the book (open quantities of the queued orders are summed) and a "
         "level emptied by a cancel after fills stays until a taker reaches it.")


def run(commands: Flow) -> Result:
    from orderbook import Order, OrderBook, OrderSide

    return drive(commands, OrderBook(), lambda is_buy, price, qty: Order(
        OrderSide.BID if is_buy else OrderSide.ASK, price, qty), NOTES)


def drive(commands: Flow, book: Any, make_order: Callable[[int, int, int], Any], notes: str) -> Result:
    """The timed loop shared with cython-orderbook (the same code compiled with Cython)."""
    orders = {oid: make_order(is_buy, price, qty) for kind, oid, is_buy, price, qty in commands if kind != 1}
    add, cancel, log = book.add_limit_order, book.cancel_order, book.trade_log
    started = time.perf_counter()
    for kind, oid, _, _, _ in commands:
        order = orders[oid]
        if kind == 1:
            cancel(order.order_id)
        else:
            add(order)
            if kind == 2 and order.remaining_quantity:
                cancel(order.order_id)
    volume = sum(trade.quantity_filled for trade in log)
    elapsed = time.perf_counter() - started
    out = levels("B", ((p, o.remaining_quantity) for p, lv in book.bids.items() for o in lv.queue.values()))
    out += levels("S", ((p, o.remaining_quantity) for p, lv in book.asks.items() for o in lv.queue.values()))
    return result(commands, elapsed, volume, out, notes)
