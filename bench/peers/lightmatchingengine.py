"""lightmatchingengine 2019.1.4: pure-Python dict-of-lists engine (gavincyi/LightMatchingEngine)."""

from __future__ import annotations

import time
from typing import Any

from bench.peers import Flow, Result, levels, result

NOTES = ("pure Python; no IOC: emulated by add_order then cancel_order if the engine's order has "
         "leaves_qty > 0; the engine assigns its own order ids (our id -> its Order, mapped in the timed "
         "loop); volume summed from the aggressor Trade records add_order returns. A filled maker is never "
         "removed from order_id_map, so cancel_order of a filled order hits an assertion when its level is "
         "gone: the adapter cancels only orders whose leaves_qty > 0. Each match step sums the whole level "
         "and cancel scans the level list (O(level size)).")


def run(commands: Flow) -> Result:
    from lightmatchingengine.lightmatchingengine import LightMatchingEngine, Side

    engine = LightMatchingEngine()
    add, cancel = engine.add_order, engine.cancel_order
    buy, sell = Side.BUY, Side.SELL
    live: dict[int, Any] = {}
    volume = 0
    started = time.perf_counter()
    for kind, oid, is_buy, price, qty in commands:
        if kind == 1:
            order = live.pop(oid)
            if order.leaves_qty:
                cancel(order.order_id, "X")
            continue
        order, trades = add("X", price, qty, buy if is_buy else sell)
        mine = order.order_id
        for trade in trades:
            if trade.order_id == mine:
                volume += trade.trade_qty
        if kind == 0:
            live[oid] = order
        elif order.leaves_qty:
            cancel(mine, "X")
    elapsed = time.perf_counter() - started
    book = engine.order_books["X"]
    out = levels("B", ((p, o.leaves_qty) for p, q in book.bids.items() for o in q))
    out += levels("S", ((p, o.leaves_qty) for p, q in book.asks.items() for o in q))
    return result(commands, elapsed, volume, out, NOTES)
