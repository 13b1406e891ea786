"""Clearing: each matcher event's settlement legs, one command per account for account.commands. Pure.

A trade becomes two FillLegs (maker first, then taker), each keyed by its account;
a cancel, expiry or matcher rejection becomes an OrderDone that releases what the
order still holds; an amend's outcome becomes an AmendDone.

The matcher publishes these legs itself, beside its events (perpline.matcher.runner): a separate
clearing processor cost every taking order one more broker hop and one more transaction commit
(docs/architecture.md, "The latency floor of each hop"). A leg re-emitted after a matcher crash is
dropped by the accounts processor, which applies legs idempotently by (symbol, seq, leg).
`legs_for` also drops events at or below a seq already cleared: readers that re-derive legs from
the events topic (the repairs, the crash-session test) see re-emitted events too.
"""

from __future__ import annotations

import logging

from perpline.contracts import messages as m
from perpline.contracts import sequence
from perpline.contracts.codes import Code

log = logging.getLogger("perpline.matcher.legs")


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
    return legs(event), verdict.last_seq


def _meta(event: m.Msg) -> dict[str, object]:
    return {"trace_id": event.trace_id, "causation_id": f"{event.symbol}:{event.seq}",
            "ts_ms": event.ts_ms}


def legs(event: m.Msg) -> list[m.Msg]:
    """The commands for account.commands that settle one matcher event (none for most events)."""
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
