"""Clearing legs and ledger rows, without a broker."""

from __future__ import annotations

from decimal import Decimal

import pytest

from perpline.accounts.ledger import JournalBuilder
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.matcher.legs import legs_for
from perpline.pipelines.ledger_sink_logic import Unbalanced, posting_rows

META = {"trace_id": "T", "causation_id": "c", "ts_ms": 5}


def trade(seq: int) -> m.Trade:
    return m.Trade(**META, symbol="BTCUSDT-PERP", seq=seq, trade_id=9, price="50000.00", quantity="0.010",
                   taker_side="BUY", taker_order_id=11, taker_account_id=1, taker_leaves="0.000", maker_order_id=22,
                   maker_account_id=2, maker_leaves="0.005")


def test_trade_splits_into_maker_then_taker_leg() -> None:
    legs, last = legs_for(trade(3), 2)
    assert last == 3
    maker, taker = legs
    assert isinstance(maker, m.FillLeg) and isinstance(taker, m.FillLeg)
    assert (maker.account_id, maker.side, maker.liquidity, maker.order_leaves) == (2, "SELL", "MAKER", "0.005")
    assert (taker.account_id, taker.side, taker.liquidity) == (1, "BUY", "TAKER")
    assert maker.trace_id == taker.trace_id == "T"


def test_seen_seq_is_dropped() -> None:
    assert legs_for(trade(3), 3) == ([], 3)
    assert legs_for(trade(2), 3) == ([], 3)


def test_cancel_releases_but_duplicate_reject_does_not() -> None:
    cancelled = m.OrderCancelled(**META, symbol="BTCUSDT-PERP", seq=4, order_id=5, account_id=1, leaves="0.010")
    (done,), _ = legs_for(cancelled, 3)
    assert isinstance(done, m.OrderDone) and done.status == "CANCELED"
    dup = m.OrderRejected(**META, symbol="BTCUSDT-PERP", seq=5, order_id=5, account_id=1,
                          code=int(Code.MATCHER_DUPLICATE_ORDER_ID))
    assert legs_for(dup, 4) == ([], 5)
    refused = m.CancelRejected(**META, symbol="BTCUSDT-PERP", seq=6, order_id=5, account_id=1, code=3001)
    assert legs_for(refused, 5) == ([], 6)


def test_posting_rows_are_exact_decimals_and_refuse_unbalanced() -> None:
    journal = JournalBuilder("DEPOSIT", "r1", 7, "USDT").transfer("platform:HOT_WALLET", "user:7:SPOT", 123).build("T", "c", 1)
    assert journal is not None
    rows = posting_rows(journal, 0, 10)
    assert [r[8] for r in rows] == [Decimal("0.00000123"), Decimal("-0.00000123")]
    journal.postings[0].amount = "0.00000124"
    with pytest.raises(Unbalanced):
        posting_rows(journal, 0, 10)
