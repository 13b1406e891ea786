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


class Sent:
    """A producer that keeps what it is given (topic, key, decoded value)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, m.Msg]] = []

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: object = None) -> None:
        logical = next(name for name, physical in topic_map().items() if physical == topic)
        self.records.append((logical, key, codec.decode(logical, value)))

    def poll(self, _timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0


def test_the_matcher_publishes_each_trades_legs_keyed_by_account_beside_its_events(tmp_path: Path) -> None:
    """Clearing is in the matcher: a trade's maker and taker legs go to account.commands (each keyed by its
    account, maker first), an order that ends its life an OrderDone; the events still go to matcher.events."""
    matcher = Matcher(tmp_path, "127.0.0.1:1", topic_map(), "never")
    matcher.recover()
    matcher.producer = Sent()  # type: ignore[assignment]
    maker = codec.encode(m.NewOrder(**META, order_id=1, account_id=7, symbol="BTCUSDT-PERP", side="SELL",
                                    order_type="LIMIT", time_in_force="GTC", price="50000", quantity="0.010",
                                    client_order_id="c1"))
    taker = codec.encode(m.NewOrder(**META, order_id=2, account_id=8, symbol="BTCUSDT-PERP", side="BUY",
                                    order_type="LIMIT", time_in_force="IOC", price="50000", quantity="0.020",
                                    client_order_id="c2"))
    matcher._publish(matcher._apply_records([record(0, maker), record(1, taker)]))
    sent = matcher.producer.records  # type: ignore[attr-defined]
    legs = [(key, type(value).__name__, getattr(value, "liquidity", "")) for topic, key, value in sent
            if topic == "account.commands"]
    assert legs == [(b"7", "FillLeg", "MAKER"), (b"8", "FillLeg", "TAKER"), (b"8", "OrderDone", "")]
    events = [type(value).__name__ for topic, _key, value in sent if topic == "matcher.events"]
    assert "Trade" in events and "OrderExpired" in events
    done = next(value for topic, _key, value in sent if isinstance(value, m.OrderDone))
    assert (done.status, done.leaves, done.order_id) == ("EXPIRED", "0.010", 2)


def amend(price: str, qty: str, cause: str) -> bytes:
    return codec.encode(m.AmendRequest(trace_id="t", causation_id=cause, ts_ms=1, order_id=1, account_id=1,
                                       symbol="BTCUSDT-PERP", price=price, quantity=qty))


def cancel(cause: str) -> bytes:
    return codec.encode(m.CancelRequest(trace_id="t", causation_id=cause, ts_ms=1, order_id=1, account_id=1,
                                        symbol="BTCUSDT-PERP"))


def test_copies_of_cancels_and_amends_apply_once_across_recovery(tmp_path: Path) -> None:
    """The accounts processor's records can come twice (a redelivery, an aborted transaction the broker
    still shows): amend A, amend B, then a copy of A must leave B's terms, a snapshot keeps that memory,
    and a copy of a cancel answers nothing."""
    first = Matcher(tmp_path, "127.0.0.1:1", topic_map(), "batch")
    first.recover()
    inputs = [order(1, "50000"), amend("50001", "0.020", "req-a"), amend("49999", "0.030", "req-b")]
    records = [record(n, raw) for n, raw in enumerate(inputs)]
    first.wal.append_batch(records)
    first._apply_records(records)
    first.take_snapshot()
    copy_a = record(3, inputs[1])
    first.wal.append_batch([copy_a])
    assert first._apply_record(copy_a) == [("BTCUSDT-PERP", [])]
    info = first.state.engines["BTCUSDT-PERP"].order(1)
    assert (info.price_ticks, info.qty_lots) == (499990, 30)
    first.wal.close()
    second = Matcher(tmp_path, "127.0.0.1:1", topic_map(), "batch")
    assert second.recover() == [("BTCUSDT-PERP", [])]  # the replayed copy emits nothing again
    assert second.state.engines["BTCUSDT-PERP"].state_hash() == first.state.engines["BTCUSDT-PERP"].state_hash()
    assert second._apply_record(record(4, inputs[1])) == [("BTCUSDT-PERP", [])]
    ((_, events),) = second._apply_record(record(5, cancel("req-c")))
    assert [type(e).__name__ for e in events] == ["OrderCancelled"]
    assert second._apply_record(record(6, cancel("req-c"))) == [("BTCUSDT-PERP", [])]
    ((_, events),) = second._apply_record(record(7, cancel("req-d")))  # another request: answered
    assert [type(e).__name__ for e in events] == ["CancelRejected"]
