"""Clearing: split matcher events into per-account settlement legs. Pure; the Quix wiring is clearing.py.

A trade becomes two FillLegs (maker first, then taker), each keyed by its account;
a cancel, expiry or matcher rejection becomes an OrderDone that releases what the
order still holds. Events whose seq was already cleared are dropped (the matcher
re-emits after a crash).
"""

from __future__ import annotations

import logging

from perpline.contracts import messages as m
from perpline.contracts import sequence
from perpline.contracts.codes import Code

log = logging.getLogger("perpline.clearing")


def opposite(side: str) -> str:
    return "SELL" if side == "BUY" else "BUY"


def legs_for(event: m.Msg, last_seq: int) -> tuple[list[m.Msg], int]:
    """(commands for account.commands, new last seq) for one matcher event."""
    verdict = sequence.accept(last_seq, event.seq)  # type: ignore[attr-defined]
    if not verdict.apply:
        return [], last_seq
    if verdict.kind == sequence.GAP and last_seq > 0:
        log.error("matcher seq gap", extra={"trace_id": event.trace_id, "symbol": getattr(event, "symbol", ""),
                                            "expected": last_seq + 1, "got": verdict.last_seq})
    return _legs(event), verdict.last_seq


def _meta(event: m.Msg) -> dict[str, object]:
    return {"trace_id": event.trace_id, "causation_id": f"{event.symbol}:{event.seq}",
            "ts_ms": event.ts_ms}


def _legs(event: m.Msg) -> list[m.Msg]:
    if isinstance(event, m.Trade):
        maker = m.FillLeg(**_meta(event), account_id=event.maker_account_id, symbol=event.symbol, seq=event.seq,  # type: ignore[arg-type]
                          trade_id=event.trade_id, order_id=event.maker_order_id, liquidity="MAKER",
                          side=opposite(event.taker_side), price=event.price, quantity=event.quantity,  # type: ignore[arg-type]
                          order_leaves=event.maker_leaves)
        taker = m.FillLeg(**_meta(event), account_id=event.taker_account_id, symbol=event.symbol, seq=event.seq,  # type: ignore[arg-type]
                          trade_id=event.trade_id, order_id=event.taker_order_id, liquidity="TAKER",
                          side=event.taker_side, price=event.price, quantity=event.quantity,
                          order_leaves=event.taker_leaves)
        return [maker, taker]
    if isinstance(event, m.OrderAmended):
        return [m.AmendDone(**_meta(event), account_id=event.account_id, symbol=event.symbol, seq=event.seq,  # type: ignore[arg-type]
                            order_id=event.order_id, ok=True, price=event.price, quantity=event.quantity,
                            leaves=event.leaves)]
    if isinstance(event, m.AmendRejected):
        return [m.AmendDone(**_meta(event), account_id=event.account_id, symbol=event.symbol, seq=event.seq,  # type: ignore[arg-type]
                            order_id=event.order_id, ok=False, code=event.code)]
    if isinstance(event, m.OrderRejected) and event.code == int(Code.MATCHER_DUPLICATE_ORDER_ID):
        return []  # a redelivered order: the live one must keep its reservation
    if isinstance(event, (m.OrderCancelled, m.OrderExpired, m.OrderRejected)):
        status = {m.OrderCancelled: "CANCELED", m.OrderExpired: "EXPIRED", m.OrderRejected: "REJECTED"}[type(event)]
        leaves = getattr(event, "leaves", "0")
        return [m.OrderDone(**_meta(event), account_id=event.account_id, symbol=event.symbol, seq=event.seq,  # type: ignore[arg-type]
                            order_id=event.order_id, status=status, leaves=leaves, code=event.code)]  # type: ignore[arg-type]
    return []
