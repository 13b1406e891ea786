"""litebook 0.0.1: Rust (PyO3) limit order book (pnxenopoulos/litebook)."""

from __future__ import annotations

import time

from bench.peers import Flow, Result, levels, result

NOTES = ("Rust via PyO3; float prices and quantities (tick_size=1.0, so price == ticks; integer lots are "
         "exact in float); Order objects made with create_order before the timed loop; volume summed from "
         "the Fill list add() returns; no IOC: emulated by add() then cancel() if the fills fall short.")


def run(commands: Flow) -> Result:
    import litebook as lb

    book = lb.OrderBook(tick_size=1.0)
    buy, sell = lb.OrderType.Buy, lb.OrderType.Sell
    orders = {oid: book.create_order(buy if is_buy else sell, float(price), float(qty))
              for kind, oid, is_buy, price, qty in commands if kind != 1}
    ids = {oid: order.id for oid, order in orders.items()}
    add, cancel = book.add, book.cancel
    volume = 0.0
    started = time.perf_counter()
    for kind, oid, _, _, qty in commands:
        if kind == 1:
            cancel(ids[oid])
            continue
        filled = 0.0
        for fill in add(orders[oid]):
            filled += fill.quantity
        volume += filled
        if kind == 2 and filled < qty:
            cancel(ids[oid])
    elapsed = time.perf_counter() - started
    out = levels("B", ((o.price_in_ticks, int(o.quantity)) for o in book.buy_orders))
    out += levels("S", ((o.price_in_ticks, int(o.quantity)) for o in book.sell_orders))
    return result(commands, elapsed, round(volume), out, NOTES)
