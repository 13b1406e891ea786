"""Reading to the true end on the embedded broker, whose ListOffsets answer is low after multi-record
batches: the risk process catches up to the end before it acts, and `perpline admin` waits for its
decisions from the real end of account.events."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from conftest_broker import BrokerProcess, running_broker

from perpline.auth.admin import _results_consumer
from perpline.config import topic_map
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.risk import runner

pytestmark = pytest.mark.integration
SYM = "BTCUSDT-PERP"
EVENTS = 600
ACCOUNTS = 300
META = {"trace_id": "", "causation_id": "t", "ts_ms": 1_800_000_000_000}


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with running_broker() as b:
        yield b


def batched_producer(bootstrap: str) -> Producer:
    """Records go in multi-record batches (the broker's ListOffsets end is then low)."""
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 1000})


def test_risk_catches_up_to_the_true_end_before_acting(broker: BrokerProcess) -> None:
    topics = topic_map()
    producer = batched_producer(broker.bootstrap)
    for seq in range(1, EVENTS + 1):  # one resting order per event, alternately bid and ask
        buy = seq % 2 == 1
        event = m.OrderRested(**META, symbol=SYM, seq=seq, order_id=seq, account_id=seq, side="BUY" if buy else "SELL",
                              price=str(40_000 - seq if buy else 60_000 + seq), leaves="0.001")
        producer.produce(topics["matcher.events"], key=SYM.encode(), value=codec.encode(event))
    for account in range(1, ACCOUNTS + 1):
        snapshot = m.PositionSnapshot(**META, account_id=account, symbol=SYM, size="0.001", entry_price="50000",
                                      margin="10", leverage=10, version=1, cost="50")
        producer.produce(topics["positions"], key=SYM.encode(), value=codec.encode(snapshot))
    assert producer.flush(10) == 0

    risk = runner.Risk(broker.bootstrap, 1000)
    try:
        ends = risk.assign()
        by_topic: dict[str, int] = {}
        for (topic, _), end in ends.items():
            by_topic[topic] = by_topic.get(topic, 0) + end
        assert by_topic == {topics["matcher.events"]: EVENTS, topics["positions"]: ACCOUNTS}  # the true ends
        risk.catch_up(ends)
        s = risk.state.symbols[SYM]
        assert s.last_seq == EVENTS and len(s.resting) == EVENTS and len(s.positions) == ACCOUNTS
        assert (s.best_bid(), s.best_ask()) == (s.inst.parse_price("39999"), s.inst.parse_price("60002"))
    finally:
        risk.consumer.close()


def test_admin_waits_for_decisions_from_the_true_end(broker: BrokerProcess) -> None:
    topic = topic_map()["account.events"]
    producer = batched_producer(broker.bootstrap)
    for i in range(EVENTS):
        old = m.CommandResult(**META, request_id=f"old-{i}", account_id=i % 7, ok=True, code=0)
        producer.produce(topic, key=str(i % 7).encode(), value=codec.encode(old))
    assert producer.flush(10) == 0
    consumer = _results_consumer(broker.bootstrap, topic)
    try:
        seen, deadline = [], time.monotonic() + 3
        while time.monotonic() < deadline:
            seen += [msg.offset() for msg in consumer.consume(500, 0.2) if msg.error() is None]
        assert seen == []  # only what comes next: no decision that was already there
    finally:
        consumer.close()
