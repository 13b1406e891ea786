"""`perpline topics`: the topics without Redpanda Console, for a laptop (embedded broker) or any cluster.

    perpline topics [--all] [--json]
        every topic of redpanda/topics.yaml (--all: also the others, e.g. Quix changelogs): partitions, the
        low and high offset of each partition and what lies between them, and for every consumer group
        with committed offsets on it, the committed offset and the lag (high - committed) per partition
    perpline topics tail TOPIC [--from-beginning | --last N] [--trace-id X] [--key K] [--partition P]
                               [--limit N] [--follow]
        records as pretty JSON (topic, partition, offset, time, key, headers, value), from the last N of
        each partition (default 10; the whole topic with --from-beginning, or when filtering by trace id or
        key without --last), until the end, or for ever with --follow (Ctrl-C stops)

The broker is PERPLINE_KAFKA_BOOTSTRAP (or --bootstrap) and TOPIC a name of topics.yaml (the prefix of
PERPLINE_TOPIC_PREFIX is added) or any topic's name on the broker. Records are read with read_committed,
so what an aborted transaction wrote is not shown. Offsets count transaction markers too, so `records`
is an upper bound for topics written in transactions. The matcher, the risk process and the API's read
model assign their partitions and never commit: their lag is on their own /metrics
(perpline_consumer_lag_messages), not here.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from perpline.config import kafka_config, settings
from perpline.contracts import topics

TIMEOUT_S = 10.0
FETCH_PROBE_S = 3.0
DEFAULT_LAST = 10
POSITION_ONLY_GROUPS = ("perpline-matcher", "perpline-risk", "perpline-api-readmodel")  # assign(), never commit


def _consumer(bootstrap: str, **extra: Any) -> Consumer:
    return Consumer(kafka_config(bootstrap, **{
        "group.id": f"perpline-topics-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "fetch.wait.max.ms": 10, "socket.timeout.ms": int(TIMEOUT_S * 1000),
        **extra}))


def watermarks(consumer: Consumer, partitions: list[TopicPartition]) -> dict[tuple[str, int], tuple[int, int]]:
    """{(topic, partition): (low, high)}. The broker's ListOffsets answer, corrected by one fetch per partition:
    the embedded broker's ListOffsets high can be low after multi-record batches (docs/broker-notes.md) while
    the high watermark of its fetch responses is right; on Redpanda both agree."""
    listed = {}
    for tp in partitions:
        listed[(tp.topic, tp.partition)] = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S, cached=False)
    probe = [TopicPartition(t, p, max(low, high - 1)) for (t, p), (low, high) in listed.items()]
    if not probe:
        return {}
    consumer.assign(probe)
    fetched: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + FETCH_PROBE_S
    while len(fetched) < len(probe) and time.monotonic() < deadline:
        consumer.poll(0.05)
        for tp in probe:
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                fetched[(tp.topic, tp.partition)] = high
    consumer.unassign()
    return {key: (low, max(high, fetched.get(key, -1))) for key, (low, high) in listed.items()}


NO_DATA = 1 << 62  # first_data_offsets: no data record up to the partition's end


def first_data_offsets(consumer: Consumer, starts: dict[tuple[str, int], int],
                       timeout_s: float) -> dict[tuple[str, int], int]:
    """Per partition, the offset of the first data record at or after its start, as `consumer` reads
    (read_committed and enable.partition.eof for transaction markers and aborted records to count as
    no data), or NO_DATA when there is none up to the end. Unknown after `timeout_s`: the start itself."""
    if not starts:
        return {}
    found: dict[tuple[str, int], int] = {}
    consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < len(starts) and time.monotonic() < deadline:
            msg = consumer.poll(0.05)
            if msg is None:
                continue
            key = (msg.topic(), msg.partition())
            if key in found or key not in starts:
                continue
            err = msg.error()
            if err is None:
                found[key] = msg.offset()
            elif err.code() == KafkaError._PARTITION_EOF:
                found[key] = NO_DATA
    finally:
        consumer.unassign()
    return {key: found.get(key, start) for key, start in starts.items()}


def committed_offsets(admin: AdminClient, topic_names: set[str]) -> dict[str, dict[tuple[str, int], int]]:
    """{group: {(topic, partition): committed offset}} for every consumer group with offsets on these topics."""
    listing = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    out: dict[str, dict[tuple[str, int], int]] = {}
    for group in sorted(g.group_id for g in listing.valid):
        request = [ConsumerGroupTopicPartitions(group)]
        try:
            answer = admin.list_consumer_group_offsets(request, request_timeout=TIMEOUT_S)[group].result(TIMEOUT_S)
        except Exception:  # noqa: BLE001 (a group being deleted meanwhile: leave it out)
            continue
        offsets = {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions or []
                   if tp.topic in topic_names and tp.offset >= 0}
        if offsets:
            out[group] = offsets
    return out


def describe(bootstrap: str, include_all: bool = False) -> list[dict[str, Any]]:
    """One entry per topic: name, logical name, partitions with low/high/records and each group's committed/lag."""
    admin = AdminClient(kafka_config(bootstrap, **{"socket.timeout.ms": int(TIMEOUT_S * 1000)}))
    metadata = admin.list_topics(timeout=TIMEOUT_S).topics
    names = {topics.physical(name): name for name in topics.ALL}
    chosen = [p for p in names if p in metadata]
    if include_all:
        chosen += sorted(t for t in metadata if t not in names and not t.startswith("__"))
    consumer = _consumer(bootstrap)
    try:
        parts = [TopicPartition(t, p) for t in chosen for p in sorted(metadata[t].partitions)]
        marks = watermarks(consumer, parts)
    finally:
        consumer.close()
    groups = committed_offsets(admin, set(chosen))
    out = []
    for name in chosen:
        rows = []
        for p in sorted(metadata[name].partitions):
            low, high = marks[(name, p)]
            row: dict[str, Any] = {"partition": p, "low": low, "high": high, "records": max(0, high - low), "groups": {}}
            for group, offsets in groups.items():
                if (name, p) in offsets:
                    row["groups"][group] = {"committed": offsets[(name, p)], "lag": max(0, high - offsets[(name, p)])}
            rows.append(row)
        out.append({"topic": name, "logical": names.get(name), "partitions": rows,
                    "records": sum(r["records"] for r in rows),
                    "groups": sorted({g for r in rows for g in r["groups"]})})
    return out


def print_table(described: list[dict[str, Any]]) -> None:
    for entry in described:
        groups = entry["groups"]
        print(f"{entry['topic']}  {len(entry['partitions'])} partitions  {entry['records']} records")
        header = f"  {'partition':>9} {'low':>9} {'high':>9} {'records':>9}"
        for group in groups:
            header += f"  | {group}: committed / lag"
        print(header)
        for row in entry["partitions"]:
            line = f"  {row['partition']:>9} {row['low']:>9} {row['high']:>9} {row['records']:>9}"
            for group in groups:
                got = row["groups"].get(group)
                cell = f"{got['committed']} / {got['lag']}" if got else "-"
                line += f"  | {cell:>{len(group) + 20}}"
            print(line)
        print()
    print("not listed: " + ", ".join(POSITION_ONLY_GROUPS) + " assign their partitions and never commit; their lag is "
          "perpline_consumer_lag_messages on their /metrics")


# --- tail ---------------------------------------------------------------------------------------


def physical_name(name: str) -> str:
    return topics.physical(name) if name in topics.ALL else name


def record_json(msg: Any) -> dict[str, Any]:
    raw = msg.value()
    try:
        value: Any = json.loads(raw) if raw is not None else None
    except ValueError:
        value = raw.decode("utf-8", "replace")
    kind, ms = msg.timestamp()
    out: dict[str, Any] = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
                           "time": datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
                           if kind and ms >= 0 else None,
                           "key": msg.key().decode("utf-8", "replace") if msg.key() is not None else None}
    headers = msg.headers()
    if headers:
        out["headers"] = {k: (v.decode("utf-8", "replace") if v is not None else None) for k, v in headers}
    out["value"] = value
    return out


def matches(record: dict[str, Any], trace_id: str | None, key: str | None) -> bool:
    if key is not None and record["key"] != key:
        return False
    if trace_id is not None:
        value = record["value"]
        found = value.get("trace_id") if isinstance(value, dict) else None
        if found != trace_id and record.get("headers", {}).get("trace_id") != trace_id:
            return False
    return True


def tail(bootstrap: str, name: str, *, from_beginning: bool = False, last: int | None = None,
         trace_id: str | None = None, key: str | None = None, partition: int | None = None, limit: int | None = None,
         follow: bool = False, out: Any = None) -> int:
    """Print the chosen records as pretty JSON; returns how many were printed."""
    out = out or sys.stdout
    topic = physical_name(name)
    consumer = _consumer(bootstrap, **{"enable.partition.eof": True})
    stop = {"now": False}
    previous = None
    if threading.current_thread() is threading.main_thread():  # Ctrl-C ends a --follow cleanly
        previous = signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    printed = 0
    try:
        metadata = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise SystemExit(f"no topic {topic} on {bootstrap}")
        numbers = sorted(metadata.partitions) if partition is None else [partition]
        if last is None:
            last = None if from_beginning or trace_id is not None or key is not None else DEFAULT_LAST
        if from_beginning or last is None:
            starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in numbers]
        else:
            marks = watermarks(consumer, [TopicPartition(topic, p) for p in numbers])
            starts = [TopicPartition(topic, p, max(marks[(topic, p)][0], marks[(topic, p)][1] - last)) for p in numbers]
        consumer.assign(starts)
        at_end: set[int] = set()
        while not stop["now"] and (limit is None or printed < limit):
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 (the library's name)
                    at_end.add(msg.partition())
                    if not follow and at_end >= set(numbers):
                        break
                continue
            at_end.discard(msg.partition())
            record = record_json(msg)
            if matches(record, trace_id, key):
                out.write(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
                out.flush()
                printed += 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        consumer.close()
    return printed


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "tail":
        parser = argparse.ArgumentParser(prog="perpline topics tail", description="records of a topic as pretty JSON")
        parser.add_argument("topic", help="a name of topics.yaml (e.g. account.commands) or any topic on the broker")
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--from-beginning", action="store_true", help="from the first record of each partition")
        where.add_argument("--last", type=int, default=None,
                           help=f"the last N records of each partition (default {DEFAULT_LAST}; with --trace-id or "
                                "--key: the whole topic)")
        parser.add_argument("--trace-id", default=None, help="only records whose value (or header) has this trace_id")
        parser.add_argument("--key", default=None, help="only records with this key (account id, symbol, ...)")
        parser.add_argument("--partition", type=int, default=None)
        parser.add_argument("--limit", type=int, default=None, help="stop after N printed records")
        parser.add_argument("--follow", "-f", action="store_true", help="keep waiting for new records (Ctrl-C stops)")
        parser.add_argument("--bootstrap", default=None, help="default: $PERPLINE_KAFKA_BOOTSTRAP")
        a = parser.parse_args(args[1:])
        tail(a.bootstrap or settings().kafka_bootstrap, a.topic, from_beginning=a.from_beginning, last=a.last,
             trace_id=a.trace_id, key=a.key, partition=a.partition, limit=a.limit, follow=a.follow)
        return
    parser = argparse.ArgumentParser(prog="perpline topics", description=__doc__.split("\n\n")[0],
                                     epilog="perpline topics tail -h: read a topic")
    parser.add_argument("--all", action="store_true", help="also topics not in topics.yaml (Quix changelogs, ...)")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    parser.add_argument("--bootstrap", default=None, help="default: $PERPLINE_KAFKA_BOOTSTRAP")
    a = parser.parse_args(args)
    bootstrap = a.bootstrap or settings().kafka_bootstrap
    try:
        described = describe(bootstrap, include_all=a.all)
    except KafkaException as exc:
        raise SystemExit(f"perpline topics: the broker at {bootstrap} did not answer ({exc})") from exc
    if a.json:
        print(json.dumps(described, indent=2))
    else:
        print_table(described)


if __name__ == "__main__":
    main()
