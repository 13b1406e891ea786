"""Consumer lag measured by the consuming process itself (perpline.obs.LagWatcher) on the embedded broker:
the records of each assigned partition not consumed yet, across a transactional producer's commit markers
and multi-record batches (whose ListOffsets answer is low on this broker), exported as
perpline_consumer_lag_messages and removed when the partition is no longer watched."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest_broker import running_broker
from prometheus_client import REGISTRY

from perpline.obs import LagWatcher

pytestmark = pytest.mark.integration


def exported(group: str, topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("perpline_consumer_lag_messages",
                                     {"group": group, "topic": topic, "partition": str(partition)})


def consume(consumer: Consumer, n: int, timeout_s: float = 20) -> int:
    got, deadline = 0, time.monotonic() + timeout_s
    while got < n and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        got += msg is not None and msg.error() is None
    return got


def test_a_consumer_exports_its_own_lag_per_partition() -> None:
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"lag-test-{uuid.uuid4().hex[:8]}"
    with running_broker() as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(topic, 2, 1, config={"retention.ms": "-1", "retention.bytes": "-1"})])[
            topic].result(10)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": f"{group}-tx"})
        producer.init_transactions(10)
        for _ in range(3):  # partition 0: 3 transactions of 10 records, offsets 0..32 with the 3 commit markers
            producer.begin_transaction()
            for i in range(10):
                producer.produce(topic, value=b'{"i": %d}' % i, partition=0)
            producer.commit_transaction(10)
        batched = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50})
        for i in range(50):  # partition 1: one multi-record batch
            batched.produce(topic, value=b'{"i": %d}' % i, partition=1)
        batched.flush(10)
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
                             "isolation.level": "read_committed", "queued.min.messages": 1})
        watcher = LagWatcher(group, interval_s=0.2)
        try:
            one = [TopicPartition(topic, 1, 10)]
            consumer.assign(one)
            watcher.watch(consumer, one)
            assert consume(consumer, 1) == 1
            assert watcher.measure() == {(topic, 1): 50 - 11}  # ListOffsets alone would say 1 here, not 50
            parts = [TopicPartition(topic, 0, 0)]
            consumer.assign(parts)
            watcher.watch(consumer, parts)
            assert consume(consumer, 12) == 12
            assert watcher.measure() == {(topic, 0): 33 - 13}  # the end after the last marker, the position past the 12th
            deadline = time.monotonic() + 10
            while (exported(group, topic, 0), exported(group, topic, 1)) != (20, None) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert exported(group, topic, 0) == 20 and exported(group, topic, 1) is None  # partition 1 is not ours now
            assert consume(consumer, 18) == 18
            consume(consumer, 1, timeout_s=1)  # the next poll steps over the last commit marker
            assert watcher.measure() == {(topic, 0): 0}  # read to the end: no lag, the markers included
            watcher.unwatch()
            assert exported(group, topic, 0) is None and exported(group, topic, 1) is None
            stamp = REGISTRY.get_sample_value("perpline_consumer_lag_timestamp_seconds", {"group": group})
            assert stamp is not None and time.time() - stamp < 5
        finally:
            watcher.unwatch()
            consumer.close()
            del admin, producer, batched  # Tansu drains open client connections for ~5 s on SIGTERM
