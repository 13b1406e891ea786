"""liquibook 2.0.1: SWIG wrapper of the C++ Liquibook engine (enewhuis/liquibook)."""

from __future__ import annotations

import time

from bench.peers import Flow, Result, levels, result

NOTES = ("C++ liquibook::book::OrderBook<SimpleOrder> (no depth tracking) via SWIG; native IOC "
         "(`add(order, oc_immediate_or_cancel)`); volume summed in a Python OrderListener.on_fill director callback; "
         "SimpleOrder objects are built before the timed loop (as the core's Commands are); a cancel "
         "of a filled order is rejected by the engine (on_cancel_reject), a no-op.")


def run(commands: Flow) -> Result:
    import liquibook as lq

    volume = [0]

    class Listener(lq.OrderListener):  # type: ignore[misc]
        def on_fill(self, order: object, matched: object, qty: int, cost: int) -> None:
            volume[0] += qty

        def on_accept(self, order: object) -> None: ...
        def on_reject(self, order: object, reason: str) -> None: ...
        def on_cancel(self, order: object) -> None: ...
        def on_cancel_reject(self, order: object, reason: str) -> None: ...
        def on_replace(self, order: object, size_delta: int, new_price: int) -> None: ...
        def on_replace_reject(self, order: object, reason: str) -> None: ...

    listener = Listener()
    book = lq.liquibook_book_OrderBook()
    book.set_order_listener(listener)
    ioc, gtc = lq.oc_immediate_or_cancel, lq.oc_no_conditions
    orders = {oid: lq.SimpleOrder(bool(is_buy), price, qty) for kind, oid, is_buy, price, qty in commands if kind != 1}
    add, cancel = book.add, book.cancel
    started = time.perf_counter()
    for kind, oid, _, _, _ in commands:
        if kind == 1:
            cancel(orders[oid])
        else:  # the Tracker takes its conditions from add(), not from the order
            add(orders[oid], ioc if kind == 2 else gtc)
    elapsed = time.perf_counter() - started
    out = levels("B", ((t.ptr().price(), t.open_qty()) for t in book.bids().values()))
    out += levels("S", ((t.ptr().price(), t.open_qty()) for t in book.asks().values()))
    return result(commands, elapsed, volume[0], out, NOTES)
