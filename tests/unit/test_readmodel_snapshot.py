"""A read model restored from a checkpoint of another one, then fed the same later events, holds exactly
what the other holds: views, book mirror, trades, candles, the matcher's per-order tracking, results."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from perpline.api import readmodel, snapshot
from perpline.api.readmodel import ReadModel
from perpline.contracts import messages as m
from perpline.matcher import convert
from perpline.matcher.loader import load_core
from tests.unit.test_depth_updates import SYM, flow


def meta(ts_ms: int) -> dict[str, Any]:
    return {"trace_id": "t", "causation_id": "c", "ts_ms": ts_ms}


def account_events(ev: Any, n: int) -> list[Any]:
    """What the accounts processor would say about matcher event `ev` (enough of it to fill every view)."""
    out: list[Any] = []
    if isinstance(ev, m.OrderAccepted):
        acct = 1 + ev.order_id % 5
        order = m.OrderView(order_id=ev.order_id, client_order_id=f"c{ev.order_id}", account_id=acct, symbol=SYM,
                            side="BUY", order_type="LIMIT", time_in_force="GTC", price="50000.0", quantity="0.040",
                            filled="0", avg_price="0", status="NEW", reduce_only=False, created_ms=n, updated_ms=n)
        out.append(m.OrderChanged(**meta(n), account_id=acct, order=order))
        out.append(m.CommandResult(**meta(n), request_id=f"r{ev.order_id}", account_id=acct, ok=True, code=0,
                                   order_id=ev.order_id))
    elif isinstance(ev, m.Trade):
        for acct, oid in ((ev.taker_account_id, ev.taker_order_id), (ev.maker_account_id, ev.maker_order_id)):
            out.append(m.FillRecorded(**meta(n), account_id=acct, symbol=SYM, trade_id=ev.trade_id, order_id=oid,
                                      side="BUY", liquidity="TAKER", price=ev.price, quantity=ev.quantity, fee="0.01",
                                      fee_asset="USDT", realized_pnl="0"))
            out.append(m.BalanceChanged(**meta(n), account_id=acct, asset="USDT", available=str(n), order_margin="0",
                                        position_margin="1", wallet=str(n), version=n))
            out.append(m.PositionChanged(**meta(n), account_id=acct, symbol=SYM, size=f"0.{n:03d}",
                                         entry_price="50000.0", margin="1", leverage=10, realized_pnl="0", version=n))
    elif isinstance(ev, (m.OrderCancelled, m.OrderExpired)):
        acct = 1 + ev.order_id % 5
        order = m.OrderView(order_id=ev.order_id, client_order_id=f"c{ev.order_id}", account_id=acct, symbol=SYM,
                            side="BUY", order_type="LIMIT", time_in_force="GTC", price="50000.0", quantity="0.040",
                            filled="0", avg_price="0", status="CANCELED", reduce_only=False, created_ms=n, updated_ms=n)
        out.append(m.OrderChanged(**meta(n), account_id=acct, order=order))
    return out


def history(n_commands: int) -> list[tuple[str, Any]]:
    """(topic, event) in the order a read model would apply them."""
    core = load_core(pure=True)
    engine = core.Engine(SYM, core.EngineConfig())
    out: list[tuple[str, Any]] = []
    for i, cmd in enumerate(flow(n_commands, seed=11)):
        cmd = msgspec.structs.replace(cmd, ts_ms=60_000 * i)
        for ev in convert.apply(engine, core, cmd):
            out.append(("matcher.events", ev))
            out.extend(("account.events", a) for a in account_events(ev, len(out)))
        if i % 50 == 0:
            out.append(("prices.mark", m.MarkPrice(**meta(60_000 * i), symbol=SYM, mark_price=f"{50000 + i % 7}.0",
                                                   index_price="50000.0", last_price="50000.0", mid_price="",
                                                   funding_rate="0.0001", next_funding_ms=0)))
            out.append(("funding.rounds", m.FundingRound(**meta(i), symbol=SYM, funding_time_ms=i, rate="0.0001",
                                                         mark_price="50000.0", positions=2, paid="1", received="1")))
            out.append(("account.events", m.FundingApplied(**meta(i), account_id=1, symbol=SYM, funding_time_ms=i,
                                                           rate="0.0001", mark_price="50000.0", size="0.010",
                                                           amount="0.05", asset="USDT")))
    return out


def feed(model: ReadModel, events: list[tuple[str, Any]]) -> None:
    for topic, ev in events:  # the consumer thread's dispatch, without a broker
        model.apply(topic, ev)


def restored_from(model: ReadModel) -> ReadModel:
    blob = snapshot.encode(snapshot.capture(model))
    fresh = ReadModel("unused:1", {})
    fresh.restore(readmodel.rebuilt(blob))  # as a replica starting from a checkpoint does
    return fresh


def test_a_restored_read_model_then_fed_the_rest_equals_the_one_that_replayed_everything() -> None:
    events = history(800)
    half = len(events) // 2
    replayed = ReadModel("unused:1", {})
    feed(replayed, events[:half])
    restored = restored_from(replayed)
    feed(replayed, events[half:])
    feed(restored, events[half:])

    assert snapshot.encode(snapshot.capture(restored)) == snapshot.encode(snapshot.capture(replayed))
    assert restored.depth_at(SYM, 1000) == replayed.depth_at(SYM, 1000) and replayed.depth(SYM, 1)[0]
    seq = replayed.book_seq(SYM)
    assert restored.depth_changes(SYM, seq - 50) == replayed.depth_changes(SYM, seq - 50)
    assert restored.trades(SYM, 500) == replayed.trades(SYM, 500) and replayed.trades(SYM, 1)
    for interval in ("1m", "1h", "1d"):
        assert restored.candles(SYM, interval, None, None, 1500) == replayed.candles(SYM, interval, None, None, 1500)
        assert restored.candles(SYM, interval, None, None, 1500, mark=True) == \
            replayed.candles(SYM, interval, None, None, 1500, mark=True)
    now_ms = 60_000 * 800
    assert restored.day_stats(SYM, now_ms) == replayed.day_stats(SYM, now_ms) is not None
    for acct in range(1, 6):
        mine, theirs = restored.snapshot_account(acct), replayed.snapshot_account(acct)
        assert (mine.balances, mine.open_orders, mine.closed_orders, mine.positions) == \
            (theirs.balances, theirs.open_orders, theirs.closed_orders, theirs.positions)
        assert (list(mine.fills), list(mine.funding)) == (list(theirs.fills), list(theirs.funding))
    assert restored.mark(SYM) == replayed.mark(SYM) and restored.funding_rounds(SYM) == replayed.funding_rounds(SYM)
    oid = replayed.tracking.newest()
    assert oid is not None
    assert restored.settled(1 + oid % 5, oid) == replayed.settled(1 + oid % 5, oid)
    assert restored.amends(oid) == replayed.amends(oid)


def test_a_redelivered_event_after_the_checkpoint_is_applied_once() -> None:
    events = history(200)
    model = ReadModel("unused:1", {})
    feed(model, events)
    restored = restored_from(model)
    fills = [ev for topic, ev in events if isinstance(ev, m.FillRecorded)]
    feed(restored, [("account.events", fills[-1])])  # the accounts processor re-sends after a crash
    assert list(restored.snapshot_account(fills[-1].account_id).fills) == \
        list(model.snapshot_account(fills[-1].account_id).fills)


def test_results_known_before_the_checkpoint_answer_after_it() -> None:
    model = ReadModel("unused:1", {})
    feed(model, history(50))
    restored = restored_from(model)
    known = next(iter(model.results.values()))
    found = asyncio.run(restored.wait_result(known.account_id, known.request_id, 0.1))
    assert found == known


def test_a_checkpoint_of_another_format_is_refused() -> None:
    state = snapshot.capture(ReadModel("unused:1", {}))
    blob = snapshot.encode(msgspec.structs.replace(state, format=snapshot.FORMAT + 1))
    with pytest.raises(ValueError, match="format"):
        snapshot.decode(blob)
