"""`perpline topics` on the embedded broker: offsets and records per partition (right although this broker's
ListOffsets answer is low after multi-record batches), consumer groups' committed offsets and lag, and
`perpline topics tail` with its filters (key, trace id, partition, last N, limit) and --follow."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from conftest_broker import running_broker

from perpline import cli
from perpline.contracts import topics
from perpline.topics_tool import tail

pytestmark = pytest.mark.integration
N = 120
ACCOUNTS = 7


def records(text: str) -> list[dict[str, Any]]:
    """The pretty-printed JSON documents of `tail`, one after another."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        doc, at = decoder.raw_decode(text, at)
        out.append(doc)
        while at < len(text) and text[at].isspace():
            at += 1
    return out


def test_topics_lists_offsets_and_group_lag_and_tails_with_filters(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with running_broker() as broker:
        monkeypatch.setenv("PERPLINE_KAFKA_BOOTSTRAP", broker.bootstrap)
        name = topics.physical(topics.ACCOUNT_COMMANDS)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20, "partitioner": "murmur2"})
        for i in range(N):  # multi-record batches: ListOffsets alone would report 1 per partition
            producer.produce(name, key=str(i % ACCOUNTS).encode(),
                             value=json.dumps({"type": "deposit", "trace_id": f"trace-{i}", "i": i}).encode())
        producer.flush(10)
        group = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "perpline-accounts",
                          "enable.auto.commit": False})
        group.commit(offsets=[TopicPartition(name, 0, 2), TopicPartition(name, 1, 0)], asynchronous=False)
        group.close()

        cli.main(["topics", "--json"])
        described = {t["topic"]: t for t in json.loads(capsys.readouterr().out)}
        assert list(described) == [topics.physical(n) for n in topics.ALL]  # every topic, in topics.yaml's order
        commands = described[name]
        assert commands["records"] == N and len(commands["partitions"]) == topics.spec(topics.ACCOUNT_COMMANDS).partitions
        assert commands["groups"] == ["perpline-accounts"]
        highs = {p["partition"]: p["high"] for p in commands["partitions"]}
        rows = {p["partition"]: p for p in commands["partitions"]}
        assert all(p["low"] == 0 and p["records"] == p["high"] for p in commands["partitions"])
        assert rows[0]["groups"]["perpline-accounts"] == {"committed": 2, "lag": highs[0] - 2}
        assert rows[1]["groups"]["perpline-accounts"] == {"committed": 0, "lag": highs[1]}
        assert rows[2]["groups"] == {} and described[topics.physical(topics.ORDERS)]["records"] == 0

        cli.main(["topics"])
        table = capsys.readouterr().out
        assert f"{name}  4 partitions  {N} records" in table and f"2 / {highs[0] - 2}" in table

        cli.main(["topics", "tail", "account.commands", "--key", "3"])  # a filter reads the whole topic
        by_key = records(capsys.readouterr().out)
        assert [r["value"]["i"] for r in by_key] == list(range(3, N, ACCOUNTS))
        assert {r["key"] for r in by_key} == {"3"} and len({r["partition"] for r in by_key}) == 1
        cli.main(["topics", "tail", "account.commands", "--trace-id", "trace-42"])
        (found,) = records(capsys.readouterr().out)
        assert found["value"] == {"type": "deposit", "trace_id": "trace-42", "i": 42} and found["key"] == "0"
        assert set(found) >= {"topic", "partition", "offset", "time", "key", "value"}
        cli.main(["topics", "tail", "account.commands", "--last", "2"])
        last = records(capsys.readouterr().out)
        assert Counter(r["partition"] for r in last) == {p: 2 for p in highs}
        assert all(r["offset"] >= highs[r["partition"]] - 2 for r in last)
        cli.main(["topics", "tail", "account.commands", "--from-beginning", "--partition", "1", "--limit", "3"])
        assert [(r["partition"], r["offset"]) for r in records(capsys.readouterr().out)] == [(1, 0), (1, 1), (1, 2)]

        followed = io.StringIO()
        follower = threading.Thread(target=tail, args=(broker.bootstrap, "account.commands"),
                                    kwargs={"last": 0, "follow": True, "limit": 2, "out": followed})
        follower.start()
        i = N
        while follower.is_alive() and i < N + 100:  # new records until the follower has printed two
            producer.produce(name, key=b"new", value=json.dumps({"trace_id": f"trace-{i}", "i": i}).encode())
            producer.flush(10)
            i += 1
            time.sleep(0.2)
        follower.join(10)
        assert not follower.is_alive()
        got = [r["value"]["i"] for r in records(followed.getvalue())]
        assert len(got) == 2 and min(got) >= N  # only records that came after it started
        del producer  # Tansu drains open client connections for ~5 s on SIGTERM
