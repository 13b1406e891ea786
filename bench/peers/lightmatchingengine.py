"""lightmatchingengine 2019.1.4: pure-Python dict-of-lists engine (gavincyi/LightMatchingEngine)."""

from __future__ import annotations

import time

from bench.peers import Flow, Result, levels, result

NOTES = ("pure Python; no IOC: emulated by add_order then cancel_order of the engine's order if its "
         "leaves_qty > 0; the engine assigns its own order ids (mapped in the timed loop); volume summed "
         "from the aggressor Trade records add_order returns; each match step sums the whole level "
         "(O(level size)) and cancel scans the level list.")


def run(commands: Flow) -> Result:
    from lightmatchingengine.lightmatchingengine import LightMatchingEngine, Side

    engine = LightMatchingEngine()
    engine.order_books.setdefault("X", type(engine.add_order("X", 1, 1, Side.BUY)[0]) and None)  # warm the book
    engine.cancel_order(engine.curr_order_id, "X")
    add, cancel = engine.add_order, engine.cancel_order
    buy, sell = Side.BUY, Side.SELL
    ids: dict[int, int] = {}
    volume = 0
    started = time.perf_counter()
    for kind, oid, is_buy, price, qty in commands:
        if kind == 1:
            cancel(ids.pop(oid), "X")
            continue
        order, trades = add("X", price, qty, buy if is_buy else sell)
        mine = order.order_id
        for trade in trades:
            if trade.order_id == mine:
                volume += trade.trade_qty
        if kind == 2:
            if order.leaves_qty:
                cancel(mine, "X")
        else:
            ids[oid] = mine
    elapsed = time.perf_counter() - started
    book = engine.order_books["X"]
    out = levels("B", ((p, o.leaves_qty) for p, q in book.bids.items() for o in q))
    out += levels("S", ((p, o.leaves_qty) for p, q in book.asks.items() for o in q))
    return result(commands, elapsed, volume, out, NOTES)
