"""The native wire's shapes (/api/v1 and its websockets), as perpline.api.binance holds Binance's:
one rendering of each value, used by the REST routes and the streams alike, so a stream frame and
its REST read agree."""

from __future__ import annotations

from typing import Any

import msgspec

from perpline.api.service import account, market
from perpline.contracts import messages as m
from perpline.contracts.instruments import Instrument
from perpline.contracts.units import format_amount, format_rate


def strip(msg: msgspec.Struct) -> dict[str, Any]:
    """A message as its fields, without the envelope's type and cause."""
    out: dict[str, Any] = msgspec.to_builtins(msg)
    for key in ("type", "causation_id"):
        out.pop(key, None)
    return out


def order(o: m.OrderView) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(o)
    out["order_id"] = str(o.order_id)
    return out


def position(p: account.PositionValue) -> dict[str, Any]:
    out = strip(p.pos)
    out["mark_price"] = p.inst.format_price(p.mark_ticks) if p.mark_ticks else None
    out["unrealized_pnl"] = format_amount(p.unrealized_pnl)
    out["liquidation_price"] = p.inst.format_price(p.liquidation_ticks)
    return out


def depth(inst: Instrument, book: market.Depth) -> dict[str, Any]:
    return {"symbol": inst.symbol, "seq": book.seq, "bids": [[p, inst.format_qty(q)] for p, q in book.bids],
            "asks": [[p, inst.format_qty(q)] for p, q in book.asks]}


def trades(found: list[m.Trade]) -> list[dict[str, Any]]:
    return [{"trade_id": t.trade_id, "price": t.price, "quantity": t.quantity, "taker_side": t.taker_side,
             "ts_ms": t.ts_ms, "seq": t.seq} for t in found]


def instrument(i: Instrument) -> dict[str, Any]:
    return {"symbol": i.symbol, "base_asset": i.base_asset, "quote_asset": i.quote_asset, "margin_asset": i.margin_asset,
            "tick_size": i.tick_size, "lot_size": i.lot_size, "min_qty": i.format_qty(i.min_qty_lots),
            "max_qty": i.format_qty(i.max_qty_lots), "min_notional": format_amount(i.min_notional),
            "max_leverage": i.max_leverage, "default_leverage": i.default_leverage,
            "maker_fee_rate": format_rate(i.maker_fee_e8), "taker_fee_rate": format_rate(i.taker_fee_e8),
            "brackets": [{"notional_cap": format_amount(b.notional_cap), "max_leverage": b.max_leverage,
                          "maint_margin_rate": format_rate(b.maint_margin_e8), "maint_amount": format_amount(b.maint_amount)}
                         for b in i.brackets]}
