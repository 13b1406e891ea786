"""pyorderbook 0.4.9: pure-Python heap-of-levels book with Decimal prices and UUID ids."""

from __future__ import annotations

import time

from bench.peers import Flow, Result, levels, result

NOTES = ("pure Python, Decimal prices, uuid4 order ids; Order objects built before the timed loop; volume "
         "summed from the Trade list in the TradeBlotter match() returns; no IOC: emulated by match() then "
         "cancel() if quantity remains; cancel() of an order no longer resting raises KeyError (and logs an "
         "error), so the adapter asks get_order() first; cancel leaves empty price levels in the heap until a "
         "taker reaches them (skipped when reading the book).")


def run(commands: Flow) -> Result:
    from pyorderbook import Book, Side
    from pyorderbook.order import Order

    book = Book()
    orders = {oid: Order(Side.BID if is_buy else Side.ASK, "X", price, qty)
              for kind, oid, is_buy, price, qty in commands if kind != 1}
    match, cancel, get_order = book.match, book.cancel, book.get_order
    volume = 0
    started = time.perf_counter()
    for kind, oid, _, _, _ in commands:
        order = orders[oid]
        if kind == 1:
            if get_order(order.id) is not None:
                cancel(order)
            continue
        for trade in match(order).trades:
            volume += trade.fill_quantity
        if kind == 2 and order.quantity:
            cancel(order)
    elapsed = time.perf_counter() - started
    out = []
    for side, tag in ((Side.BID, "B"), (Side.ASK, "S")):
        out += levels(tag, ((int(lv.price), o.quantity) for lv in book.levels["X"][side] for o in lv.orders.values()))
    return result(commands, elapsed, volume, out, NOTES)
