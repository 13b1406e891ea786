"""perpline's embedded broker against real Kafka clients (librdkafka through confluent-kafka)."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest_broker import PY, running_broker

from perpline.contracts import topics

pytestmark = pytest.mark.integration


def _values(bootstrap: str, topic: str, isolation: str, expected: int, timeout_s: float = 15.0) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "isolation.level": isolation})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append(msg.value() or b"")
        extra = consumer.poll(0.5)  # nothing beyond what is expected
        assert extra is None or extra.error(), extra.value()
    finally:
        consumer.close()
    return out


def test_committed_readers_see_committed_records_only_and_a_restart_ends_the_dead_transaction() -> None:
    topic = topics.physical(topics.DEAD_LETTERS)
    with running_broker() as broker:
        producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "t-0", "linger.ms": 0})
        producer.init_transactions(10)
        for values, commit in (((b"a", b"b"), True), ((b"x",), False), ((b"c",), True)):
            producer.begin_transaction()
            for value in values:
                producer.produce(topic, value)
            producer.flush(10)
            (producer.commit_transaction if commit else producer.abort_transaction)(10)
        producer.begin_transaction()
        producer.produce(topic, b"left-open")
        producer.flush(10)  # a crashed producer's open transaction: readers stop before it
        assert _values(broker.bootstrap, topic, "read_committed", 3) == [b"a", b"b", b"c"]
        assert _values(broker.bootstrap, topic, "read_uncommitted", 5) == [b"a", b"b", b"x", b"c", b"left-open"]
        restarted = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "t-0", "linger.ms": 0})
        restarted.init_transactions(10)  # fences the old one and aborts what it left open
        restarted.begin_transaction()
        restarted.produce(topic, b"d")
        restarted.commit_transaction(10)
        assert _values(broker.bootstrap, topic, "read_committed", 4) == [b"a", b"b", b"c", b"d"]
        with pytest.raises(Exception, match="(?i)fenced|epoch"):
            producer.commit_transaction(10)


def test_a_group_splits_partitions_and_takes_them_back_when_a_member_leaves() -> None:
    topic = topics.physical(topics.ACCOUNT_EVENTS)  # four partitions in topics.yaml
    with running_broker() as broker:
        conf = {"bootstrap.servers": broker.bootstrap, "group.id": "split", "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest"}
        first, second = Consumer(conf), Consumer(conf)
        first.subscribe([topic])
        second.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            first.poll(0.1)
            second.poll(0.1)
            mine, theirs = {tp.partition for tp in first.assignment()}, {tp.partition for tp in second.assignment()}
            if mine and theirs and len(mine | theirs) == 4:
                break
        assert mine and theirs and not mine & theirs and len(mine | theirs) == 4
        second.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(first.assignment()) < 4:
            first.poll(0.1)
        assert {tp.partition for tp in first.assignment()} == {0, 1, 2, 3}
        first.close()


def test_delete_records_moves_the_low_watermark_and_a_bad_frame_closes_only_its_connection() -> None:
    topic = topics.physical(topics.RECON_BREAKS)
    with running_broker() as broker:
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
        for index in range(5):
            producer.produce(topic, json.dumps({"n": index}).encode())
            producer.flush(10)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.delete_records([TopicPartition(topic, 0, 3)])[TopicPartition(topic, 0, 3)].result(10)
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "wm"})
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (3, 5)
        host, port = broker.bootstrap.split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(struct.pack(">i", 8) + struct.pack(">hhi", 999, 0, 1))  # an API nobody has
            assert sock.recv(16) == b""  # closed, like Kafka does
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (3, 5)
        consumer.close()
        del admin


def test_a_taken_port_is_refused_with_its_holder() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = subprocess.run([PY, "-m", "perpline.broker.launch", "--port", str(port)], capture_output=True,
                              timeout=30)
    assert proc.returncode == 1 and proc.stdout == b""
    failures = [json.loads(line) for line in proc.stderr.splitlines() if b"broker start failed" in line]
    assert failures and str(port) in json.dumps(failures[0])


def test_a_compacted_changelog_reads_back_the_newest_value_of_each_key_to_the_end() -> None:
    with running_broker(env={"PERPLINE_BROKER_COMPACT_BYTES": "2000"}) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("changelog-t", 1, 1, config={"cleanup.policy": "compact"})])["changelog-t"].result(10)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "c-0", "linger.ms": 0})
        producer.init_transactions(10)
        for round_ in range(40):
            producer.begin_transaction()
            for key in ("a", "b", "c"):
                producer.produce("changelog-t", key=key.encode(), value=f"{key}{round_}".encode() * 20)
            producer.commit_transaction(10)
        time.sleep(1.0)  # the broker compacts on its housekeeping tick
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "restore", "enable.auto.commit": False,
                             "isolation.level": "read_committed", "enable.partition.eof": True})
        consumer.assign([TopicPartition("changelog-t", 0, 0)])
        latest: dict[bytes, bytes] = {}
        read, deadline = 0, time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                break  # partition EOF: the position reached the end of the log
            latest[msg.key() or b""] = msg.value() or b""
            read += 1
        consumer.close()
        assert latest == {k.encode(): f"{k}39".encode() * 20 for k in "abc"}
        assert read < 120 / 2, read  # most of the 120 records were compacted away
        del admin
