"""cython-orderbook 0.1.2: the akhil4n-orderbook code compiled with Cython (cdef Order and PriceLevel classes)."""

from __future__ import annotations

import time

from bench.peers import Flow, Result, levels, result

NOTES = ("Cython-compiled (Order/PriceLevel are cdef classes; the book itself is still a Python class "
         "on sortedcontainers), integer prices used as given; Order objects built before the timed "
         "loop; volume summed from the Trade records appended to book.trade_log; no IOC: emulated by "
         "add_limit_order then cancel_order if remaining_quantity > 0. PriceLevel.total_quantity "
         "drifts above the true open quantity after fills (measured), so it is not used to read the "
         "book (open quantities of the queued orders are summed) and a level emptied by a cancel after"
         " fills stays until a taker reaches it.")


def run(commands: Flow) -> Result:
    from cython_orderbook import Order, OrderBook, OrderSide

    book = OrderBook()
    orders = {oid: Order(OrderSide.BID if is_buy else OrderSide.ASK, qty, price)
              for kind, oid, is_buy, price, qty in commands if kind != 1}
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
    return result(commands, elapsed, volume, out, NOTES)
