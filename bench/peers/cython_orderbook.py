"""cython-orderbook 0.1.2: the akhil4n-orderbook code compiled with Cython (cdef Order and PriceLevel classes)."""

from __future__ import annotations

from bench.peers import Flow, Result
from bench.peers.akhil4n_orderbook import drive

NOTES = ("Cython-compiled (Order/PriceLevel are cdef classes; the book itself is still a Python class "
         "on sortedcontainers), integer prices used as given; Order objects built before the timed "
         "loop; volume summed from the Trade records appended to book.trade_log; no IOC: emulated by "
         "add_limit_order then cancel_order if remaining_quantity > 0. PriceLevel.total_quantity "
         "drifts above the true open quantity after fills (measured), so it is not used to read the "
         "book (open quantities of the queued orders are summed) and a level emptied by a cancel after"
         " fills stays until a taker reaches it.")


def run(commands: Flow) -> Result:
    from cython_orderbook import Order, OrderBook, OrderSide

    return drive(commands, OrderBook(), lambda is_buy, price, qty: Order(
        OrderSide.BID if is_buy else OrderSide.ASK, qty, price), NOTES)
