"""The matcher shell without a broker: bad inputs become dead letters, never a crash; recovery from disk."""

from __future__ import annotations

from pathlib import Path

from perpline.config import topic_map
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.matcher.runner import DEAD, Matcher, wal_record

META = {"trace_id": "t", "causation_id": "c", "ts_ms": 1}


def record(offset: int, raw: bytes) -> bytes:
    return wal_record(0, offset, raw)


def order(order_id: int, price: str, qty: str = "0.010", side: str = "BUY") -> bytes:
    return codec.encode(m.NewOrder(**META, order_id=order_id, account_id=1, symbol="BTCUSDT-PERP", side=side,
                                   order_type="LIMIT", time_in_force="GTC", price=price, quantity=qty,
                                   client_order_id=f"c{order_id}"))


def test_bad_inputs_are_dead_letters_and_the_book_goes_on(tmp_path: Path) -> None:
    matcher = Matcher(tmp_path, "127.0.0.1:1", topic_map(), "never")
    matcher.recover()
    before = DEAD._value.get()
    bad = [b"not json", order(1, "50000.05"), order(2, "50000", qty="0.0001"),
           codec.encode(m.CancelRequest(**META, order_id=9, account_id=1, symbol="NOPE-PERP"))]
    for n, raw in enumerate(bad):
        assert matcher._apply_record(record(n, raw)) == []
    assert DEAD._value.get() - before == len(bad)
    ((symbol, events),) = matcher._apply_record(record(10, order(3, "50000")))
    assert symbol == "BTCUSDT-PERP" and [type(e).__name__ for e in events] == ["OrderAccepted", "OrderRested"]
    assert events[-1].seq == 2 and matcher.state.next_offsets == {0: 11}


def test_recovery_replays_the_wal_to_the_same_book(tmp_path: Path) -> None:
    first = Matcher(tmp_path, "127.0.0.1:1", topic_map(), "batch")
    first.recover()
    records = [record(n, order(n + 1, f"{50000 + n}")) for n in range(5)]
    first.wal.append_batch(records)
    for r in records:
        first._apply_record(r)
    first.take_snapshot()
    more = [record(5, order(6, "49000", side="SELL"))]
    first.wal.append_batch(more)
    first._apply_record(more[0])
    first.wal.close()
    expected = first.state.engines["BTCUSDT-PERP"].state_hash()
    second = Matcher(tmp_path, "127.0.0.1:1", topic_map(), "batch")
    replayed = second.recover()
    assert second.state.engines["BTCUSDT-PERP"].state_hash() == expected
    assert len(replayed) == 1 and [type(e).__name__ for e in replayed[0][1]] == ["OrderAccepted", "OrderExpired"]  # same account: STP expires the taker
    assert second.state.next_offsets == {0: 6}
