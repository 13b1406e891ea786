"""The API's read model answers a request with that account's decision only: request ids (Idempotency-Keys)
are the client's, unique per account, so two accounts may send the same one."""

from __future__ import annotations

import asyncio

from perpline.api.readmodel import ReadModel
from perpline.contracts import messages as m

META = {"trace_id": "t", "causation_id": "c", "ts_ms": 1}


def decided(model: ReadModel, account_id: int, request_id: str, ok: bool) -> None:
    result = m.CommandResult(**META, request_id=request_id, account_id=account_id, ok=ok, code=0 if ok else 2002)
    model.apply("account.events", result)  # the consumer thread's dispatch, without a broker


def test_the_same_request_id_in_two_accounts_gets_each_its_own_answer() -> None:
    model = ReadModel("unused:1", {})
    decided(model, 41, "dep-1", ok=True)
    assert model.result(41, "dep-1").ok and model.result(42, "dep-1") is None  # type: ignore[union-attr]

    async def scenario() -> tuple[m.CommandResult | None, m.CommandResult | None]:
        waiting = asyncio.ensure_future(model.wait_result(42, "dep-1", 5.0))
        await asyncio.sleep(0.05)
        assert not waiting.done(), "account 41's answer must not answer account 42"
        decided(model, 42, "dep-1", ok=False)
        return await waiting, await model.wait_result(41, "dep-1", 0.1)

    theirs, mine = asyncio.run(scenario())
    assert theirs is not None and (theirs.account_id, theirs.ok) == (42, False)
    assert mine is not None and (mine.account_id, mine.ok) == (41, True)


def test_a_trace_shows_only_the_callers_rows() -> None:
    from perpline.api.service.history import own_trace_rows  # noqa: PLC0415

    rows = [{"source": "account_events", "detail": '{"account_id":42,"available":"1"}'},
            {"source": "account_events", "detail": '{"account_id":4,"available":"2"}'},
            {"source": "ledger", "detail": "fill:X:1:MAKER/TRADE_FEE account 42 amount 1"},
            {"source": "ledger", "detail": "fill:X:1:TAKER/TRADE_FEE account 4 amount 2"},
            {"source": "matcher_events", "detail": '{"account_id":4}'}]
    assert own_trace_rows(rows, 4) == [rows[1], rows[3]]
    assert own_trace_rows(rows, 42) == [rows[0], rows[2]]


def _order(order_id: int, status: str, filled: str) -> m.OrderView:
    return m.OrderView(order_id=order_id, client_order_id=f"c{order_id}", account_id=7, symbol="BTCUSDT", side="BUY",
                       order_type="LIMIT", time_in_force="GTC", price="50000", quantity="0.010", filled=filled,
                       avg_price="50000", status=status, reduce_only=False, created_ms=1, updated_ms=1)  # type: ignore[arg-type]


def _apply(model: ReadModel, *events: object) -> None:
    for ev in events:  # the consumer thread's dispatch, without a broker
        model.apply("account.events", ev)


def test_redelivered_account_events_are_applied_once_and_never_step_back() -> None:
    """At-least-once processors re-send what they produced since their last checkpoint after a crash:
    the views must look as if each event came once."""
    model = ReadModel("unused:1", {})
    fill = m.FillRecorded(**META, account_id=7, symbol="BTCUSDT", trade_id=5, order_id=1, side="BUY", liquidity="TAKER",
                          price="50000", quantity="0.004", fee="0.08", fee_asset="USDT", realized_pnl="0")
    balance = {"account_id": 7, "asset": "USDT", "available": "1", "order_margin": "0", "position_margin": "0"}
    new, partly, done = (m.OrderChanged(**META, account_id=7, order=_order(1, s, f))
                         for s, f in (("NEW", "0"), ("PARTIALLY_FILLED", "0.004"), ("CANCELED", "0.004")))
    first = [m.BalanceChanged(**META, **balance, wallet="100", version=1), new, fill, partly,
             m.BalanceChanged(**META, **balance, wallet="99.92", version=2), done]
    _apply(model, *first, *first[1:])  # the whole run, then its replay from the second event
    view = model.snapshot_account(7)
    assert [f.trade_id for f in view.fills] == [5]
    assert view.balances["USDT"].wallet == "99.92" and view.open_orders == {}
    assert view.closed_orders[1].status == "CANCELED"
    _apply(model, partly)  # a late copy of an older open state: ignored
    assert model.snapshot_account(7).open_orders == {}
    model2 = ReadModel("unused:1", {})
    _apply(model2, new, partly, new)  # an older, less filled open state: ignored
    assert model2.snapshot_account(7).open_orders[1].filled == "0.004"
