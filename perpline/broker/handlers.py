"""Request handlers of the embedded broker: one function per Kafka API, decoding its request and
encoding its answer for every version it advertises (non-flexible versions only, see VERSIONS).

Each handler takes (session, version, reader) and returns the response body, or None when the
protocol wants no answer (a produce with acks=0).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from perpline.broker import errors as e
from perpline.broker.cluster import CLUSTER_ID, NODE_ID, Cluster
from perpline.broker.partition import BatchError, PartitionLog, split_batches
from perpline.broker.wire import Reader, Writer

MAX_FETCH_WAIT_MS = 30_000
MAX_FETCH_BYTES = 64 << 20


@dataclass(slots=True)
class Session:
    cluster: Cluster
    client_id: str
    client_host: str


Handler = Callable[[Session, int, Reader], Awaitable[bytes | None]]


def _topic_partitions(r: Reader) -> tuple[str, list[int]]:
    return r.string(), r.array(Reader.i32)


# --- metadata and administration ---------------------------------------------------------------


async def api_versions(s: Session, v: int, r: Reader) -> bytes:
    w = Writer().i16(e.NONE)
    if v >= 3:
        r.compact_nstring()
        r.compact_nstring()
        r.skip_tags()
        w.uvarint(len(VERSIONS) + 1)
        for key, (low, high, _) in sorted(VERSIONS.items()):
            w.i16(key).i16(low).i16(high).uvarint(0)
        return bytes(w.i32(0).uvarint(0))
    w.array(sorted(VERSIONS.items()), lambda w, kv: w.i16(kv[0]).i16(kv[1][0]).i16(kv[1][1]))
    if v >= 1:
        w.i32(0)
    return bytes(w)


def unsupported_api_versions() -> bytes:
    """The v0 answer to an ApiVersions request of a version we do not know (the client retries lower)."""
    w = Writer().i16(e.UNSUPPORTED_VERSION)
    w.array(sorted(VERSIONS.items()), lambda w, kv: w.i16(kv[0]).i16(kv[1][0]).i16(kv[1][1]))
    return bytes(w)


async def metadata(s: Session, v: int, r: Reader) -> bytes:
    names = r.narray(Reader.string)
    if v >= 4:
        r.boolean()
    if v >= 8:
        r.boolean()
        r.boolean()
    cluster = s.cluster
    if names is None or (v == 0 and not names):
        names = list(cluster.topics)
    w = Writer()
    if v >= 3:
        w.i32(0)
    w.i32(1).i32(NODE_ID).nstring(cluster.host).i32(cluster.port)
    if v >= 1:
        w.nstring(None)
    if v >= 2:
        w.nstring(CLUSTER_ID)
    if v >= 1:
        w.i32(NODE_ID)
    w.i32(len(names))
    for name in names:
        topic = cluster.topics.get(name)
        w.i16(e.NONE if topic else e.UNKNOWN_TOPIC_OR_PARTITION).nstring(name)
        if v >= 1:
            w.boolean(False)
        count = len(topic.partitions) if topic else 0
        w.i32(count)
        for index in range(count):
            w.i16(e.NONE).i32(index).i32(NODE_ID)
            if v >= 7:
                w.i32(-1)
            w.i32(1).i32(NODE_ID).i32(1).i32(NODE_ID)
            if v >= 5:
                w.i32(0)
        if v >= 8:
            w.i32(-2147483648)
    if v >= 8:
        w.i32(-2147483648)
    return bytes(w)


async def find_coordinator(s: Session, v: int, r: Reader) -> bytes:
    r.string()
    if v >= 1:
        r.i8()
    w = Writer()
    if v >= 1:
        w.i32(0)
    w.i16(e.NONE)
    if v >= 1:
        w.nstring(None)
    return bytes(w.i32(NODE_ID).nstring(s.cluster.host).i32(s.cluster.port))


async def create_topics(s: Session, v: int, r: Reader) -> bytes:
    def topic(r: Reader) -> tuple[str, int, dict[str, str]]:
        name, partitions = r.string(), r.i32()
        r.i16()
        assignments = r.array(lambda r: (r.i32(), r.array(Reader.i32)))
        configs = {k: val for k, val in r.array(lambda r: (r.string(), r.nstring())) if val is not None}
        return name, (len(assignments) if assignments else (1 if partitions == -1 else partitions)), configs

    topics = r.array(topic)
    r.i32()
    validate_only = r.boolean() if v >= 1 else False
    w = Writer()
    if v >= 2:
        w.i32(0)
    w.i32(len(topics))
    for name, partitions, configs in topics:
        if validate_only:
            error = e.TOPIC_ALREADY_EXISTS if name in s.cluster.topics else e.NONE
        else:
            error = s.cluster.create_topic(name, partitions, configs)
        w.nstring(name).i16(error)
        if v >= 1:
            w.nstring(None if error == e.NONE else f"error {error} creating {name}")
    return bytes(w)


async def delete_topics(s: Session, v: int, r: Reader) -> bytes:
    names = r.array(Reader.string)
    r.i32()
    w = Writer()
    if v >= 1:
        w.i32(0)
    return bytes(w.array(names, lambda w, n: w.nstring(n).i16(s.cluster.delete_topic(n))))


async def describe_configs(s: Session, v: int, r: Reader) -> bytes:
    resources = r.array(lambda r: (r.i8(), r.string(), r.narray(Reader.string)))
    if v >= 1:
        r.boolean()
    w = Writer().i32(0).i32(len(resources))
    for kind, name, keys in resources:
        topic = s.cluster.topics.get(name) if kind == 2 else None
        configs = topic.configs if topic else {}
        error = e.UNKNOWN_TOPIC_OR_PARTITION if kind == 2 and topic is None else e.NONE
        chosen = [(k, configs[k]) for k in (keys if keys is not None else sorted(configs)) if k in configs]
        w.i16(error).nstring(None).i8(kind).nstring(name).i32(len(chosen))
        for key, value in chosen:
            w.nstring(key).nstring(value).boolean(False)
            if v == 0:
                w.boolean(False)
            else:
                w.i8(1)
            w.boolean(False)
            if v >= 1:
                w.i32(0)
    return bytes(w)


async def delete_records(s: Session, v: int, r: Reader) -> bytes:
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i64()))))
    r.i32()
    w = Writer().i32(0).i32(len(topics))
    for name, partitions in topics:
        w.nstring(name).i32(len(partitions))
        for index, offset in partitions:
            log = s.cluster.log(name, index)
            if log is None:
                w.i32(index).i64(-1).i16(e.UNKNOWN_TOPIC_OR_PARTITION)
            elif offset > log.end:
                w.i32(index).i64(log.log_start).i16(e.OFFSET_OUT_OF_RANGE)
            else:
                w.i32(index).i64(log.trim_to(log.end if offset == -1 else offset)).i16(e.NONE)
    return bytes(w)


# --- produce, fetch, offsets ---------------------------------------------------------------------


def _produce_partition(s: Session, topic: str, index: int, records: bytes | None) -> tuple[int, int]:
    log = s.cluster.log(topic, index)
    if log is None:
        return e.UNKNOWN_TOPIC_OR_PARTITION, -1
    try:
        batches = split_batches(records or b"")
    except BatchError:
        return e.CORRUPT_MESSAGE, -1
    first = -1
    for head, batch in batches:
        if head.transactional and s.cluster.txns.fenced(head.producer_id, head.producer_epoch):
            return e.INVALID_PRODUCER_EPOCH, -1
        base = log.duplicate_of(head)
        if base is None:
            base = log.append(head, batch)
        first = base if first < 0 else first
    return e.NONE, first


async def produce(s: Session, v: int, r: Reader) -> bytes | None:
    if v >= 3:
        r.nstring()
    acks = r.i16()
    r.i32()
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.nbytes()))))
    results = [(name, [(index, *_produce_partition(s, name, index, records)) for index, records in parts])
               for name, parts in topics]
    if acks == 0:
        return None
    w = Writer().i32(len(results))
    for name, parts in results:
        w.nstring(name).i32(len(parts))
        for index, error, base in parts:
            w.i32(index).i16(error).i64(base)
            if v >= 2:
                w.i64(-1)
            if v >= 5:
                log = s.cluster.log(name, index)
                w.i64(log.log_start if log else -1)
            if v >= 8:
                w.i32(0).nstring(None)
    if v >= 1:
        w.i32(0)
    return bytes(w)


@dataclass(slots=True)
class FetchPartition:
    index: int
    offset: int
    max_bytes: int


def _fetch_limit(log: PartitionLog, committed: bool) -> int:
    return log.last_stable if committed else log.end


def _fetch_error(log: PartitionLog | None, offset: int) -> int:
    if log is None:
        return e.UNKNOWN_TOPIC_OR_PARTITION
    return e.OFFSET_OUT_OF_RANGE if offset < log.log_start or offset > log.end else e.NONE


def _has_data(s: Session, topics: list[tuple[str, list[FetchPartition]]], committed: bool) -> bool:
    for name, parts in topics:
        for p in parts:
            log = s.cluster.log(name, p.index)
            if log is None or _fetch_error(log, p.offset) or p.offset < _fetch_limit(log, committed):
                return True  # data, or an error to report: answer now
    return False


def _fetch_answer(s: Session, v: int, topics: list[tuple[str, list[FetchPartition]]], committed: bool,
                  max_bytes: int) -> bytes:
    w = Writer()
    if v >= 1:
        w.i32(0)
    if v >= 7:
        w.i16(e.NONE).i32(0)
    w.i32(len(topics))
    budget = max_bytes
    for name, parts in topics:
        w.nstring(name).i32(len(parts))
        for p in parts:
            log = s.cluster.log(name, p.index)
            records, error, aborted = b"", _fetch_error(log, p.offset), None
            if log is not None and error == e.NONE:
                limit = _fetch_limit(log, committed)
                if p.offset < limit and budget > 0:
                    records = log.read(p.offset, limit, min(p.max_bytes, budget))
                    budget -= len(records)
                    if committed:
                        aborted = log.aborted_in(p.offset, limit)
            w.i32(p.index).i16(error)
            w.i64(log.end if log else -1)
            if v >= 4:
                w.i64(log.last_stable if log else -1)
            if v >= 5:
                w.i64(log.log_start if log else -1)
            if v >= 4:
                w.array(aborted if committed else None, lambda w, a: w.i64(a[0]).i64(a[1]))
            if v >= 11:
                w.i32(-1)
            w.nbytes(records)
    return bytes(w)


async def fetch(s: Session, v: int, r: Reader) -> bytes:
    r.i32()
    max_wait_ms, _min_bytes = r.i32(), r.i32()
    max_bytes = r.i32() if v >= 3 else MAX_FETCH_BYTES
    committed = (r.i8() == 1) if v >= 4 else False
    if v >= 7:
        r.i32()
        r.i32()

    def partition(r: Reader) -> FetchPartition:
        index = r.i32()
        if v >= 9:
            r.i32()
        offset = r.i64()
        if v >= 5:
            r.i64()
        return FetchPartition(index, offset, r.i32())

    topics = r.array(lambda r: (r.string(), r.array(partition)))
    if v >= 7:
        r.array(_topic_partitions)
    if v >= 11:
        r.string()
    max_bytes = min(max(max_bytes, 1), MAX_FETCH_BYTES)
    wait_s = min(max(max_wait_ms, 0), MAX_FETCH_WAIT_MS) / 1000
    if wait_s > 0 and not _has_data(s, topics, committed):
        await _wait_for_data(s, topics, wait_s)
    return _fetch_answer(s, v, topics, committed, max_bytes)


async def _wait_for_data(s: Session, topics: list[tuple[str, list[FetchPartition]]], wait_s: float) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    logs = [log for name, parts in topics for p in parts if (log := s.cluster.log(name, p.index)) is not None]
    for log in logs:
        log.waiters.append(waiter)
    handle = loop.call_later(wait_s, _expire, waiter)
    try:
        await waiter
    finally:
        handle.cancel()
        for log in logs:  # partitions that stayed quiet must not collect expired waiters
            if waiter in log.waiters:
                log.waiters.remove(waiter)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def list_offsets(s: Session, v: int, r: Reader) -> bytes:
    r.i32()
    committed = (r.i8() == 1) if v >= 2 else False

    def partition(r: Reader) -> tuple[int, int]:
        index = r.i32()
        if v >= 4:
            r.i32()
        timestamp = r.i64()
        if v == 0:
            r.i32()
        return index, timestamp

    topics = r.array(lambda r: (r.string(), r.array(partition)))
    w = Writer()
    if v >= 2:
        w.i32(0)
    w.i32(len(topics))
    for name, parts in topics:
        w.nstring(name).i32(len(parts))
        for index, timestamp in parts:
            log = s.cluster.log(name, index)
            if log is None:
                error, offset = e.UNKNOWN_TOPIC_OR_PARTITION, -1
            elif timestamp == -1:
                error, offset = e.NONE, _fetch_limit(log, committed)
            elif timestamp == -2:
                error, offset = e.NONE, log.log_start
            else:
                error, offset = e.NONE, min(log.offset_for_time(timestamp), _fetch_limit(log, committed))
            w.i32(index).i16(error)
            if v == 0:
                w.i32(1).i64(offset)
                continue
            w.i64(-1).i64(offset)
            if v >= 4:
                w.i32(-1)
    return bytes(w)


# --- consumer groups -----------------------------------------------------------------------------


async def join_group(s: Session, v: int, r: Reader) -> bytes:
    group_id, session_ms = r.string(), r.i32()
    rebalance_ms = r.i32() if v >= 1 else session_ms
    member_id = r.string()
    instance_id = r.nstring() if v >= 5 else None
    protocol_type = r.string()
    protocols = r.array(lambda r: (r.string(), r.nbytes() or b""))
    answer = await s.cluster.groups.join(group_id, member_id, instance_id, s.client_id, s.client_host, session_ms,
                                         rebalance_ms, protocol_type, protocols, require_known_id=v >= 4)
    w = Writer()
    if v >= 2:
        w.i32(0)
    w.i16(answer.error).i32(answer.generation).nstring(answer.protocol).nstring(answer.leader)
    w.nstring(answer.member_id).i32(len(answer.members))
    for mid, iid, meta in answer.members:
        w.nstring(mid)
        if v >= 5:
            w.nstring(iid)
        w.nbytes(meta)
    return bytes(w)


async def sync_group(s: Session, v: int, r: Reader) -> bytes:
    group_id, generation, member_id = r.string(), r.i32(), r.string()
    if v >= 3:
        r.nstring()
    assignments = dict(r.array(lambda r: (r.string(), r.nbytes() or b"")))
    error, assignment = await s.cluster.groups.sync(group_id, generation, member_id, assignments)
    w = Writer()
    if v >= 1:
        w.i32(0)
    return bytes(w.i16(error).nbytes(assignment))


async def heartbeat(s: Session, v: int, r: Reader) -> bytes:
    group_id, generation, member_id = r.string(), r.i32(), r.string()
    if v >= 3:
        r.nstring()
    w = Writer()
    if v >= 1:
        w.i32(0)
    return bytes(w.i16(s.cluster.groups.heartbeat(group_id, generation, member_id)))


async def leave_group(s: Session, v: int, r: Reader) -> bytes:
    group_id = r.string()
    members = [(r.string(), None)] if v < 3 else r.array(lambda r: (r.string(), r.nstring()))
    results = [(mid, iid, s.cluster.groups.leave(group_id, mid)) for mid, iid in members]
    w = Writer()
    if v >= 1:
        w.i32(0)
    if v < 3:
        return bytes(w.i16(results[0][2]))
    w.i16(e.NONE)
    return bytes(w.array(results, lambda w, m: w.nstring(m[0]).nstring(m[1]).i16(m[2])))


async def offset_commit(s: Session, v: int, r: Reader) -> bytes:
    group_id = r.string()
    generation = r.i32() if v >= 1 else -1
    member_id = r.string() if v >= 1 else ""
    if v >= 7:
        r.nstring()
    if 2 <= v <= 4:
        r.i64()

    def partition(r: Reader) -> tuple[int, int, str | None]:
        index, offset = r.i32(), r.i64()
        if v >= 6:
            r.i32()
        if v == 1:
            r.i64()
        return index, offset, r.nstring()

    topics = r.array(lambda r: (r.string(), r.array(partition)))
    error = s.cluster.groups.commit_check(group_id, generation, member_id)
    if error == e.NONE:
        s.cluster.groups.store(group_id, {(name, index): (offset, meta)
                                          for name, parts in topics for index, offset, meta in parts})
    w = Writer()
    if v >= 3:
        w.i32(0)
    return bytes(w.array(topics, lambda w, t: w.nstring(t[0]).array(t[1], lambda w, p: w.i32(p[0]).i16(error))))


async def offset_fetch(s: Session, v: int, r: Reader) -> bytes:
    group_id = r.string()
    wanted = r.narray(_topic_partitions)
    group = s.cluster.groups.groups.get(group_id)
    offsets = group.offsets if group else {}
    if wanted is None:
        by_topic: dict[str, list[int]] = {}
        for name, index in sorted(offsets):
            by_topic.setdefault(name, []).append(index)
        wanted = list(by_topic.items())
    w = Writer()
    if v >= 3:
        w.i32(0)
    w.i32(len(wanted))
    for name, indexes in wanted:
        w.nstring(name).i32(len(indexes))
        for index in indexes:
            offset, meta = offsets.get((name, index), (-1, ""))
            w.i32(index).i64(offset)
            if v >= 5:
                w.i32(-1)
            w.nstring(meta).i16(e.NONE)
    if v >= 2:
        w.i16(e.NONE)
    return bytes(w)


async def describe_groups(s: Session, v: int, r: Reader) -> bytes:
    names = r.array(Reader.string)
    if v >= 3:
        r.boolean()
    w = Writer()
    if v >= 1:
        w.i32(0)
    w.i32(len(names))
    for name in names:
        group = s.cluster.groups.groups.get(name)
        members = list(group.members.values()) if group else []
        w.i16(e.NONE).nstring(name).nstring(group.state if group else "Dead")
        w.nstring(group.protocol_type if group else "").nstring(group.protocol if group else "")
        w.i32(len(members))
        for m in members:
            w.nstring(m.member_id)
            if v >= 4:
                w.nstring(m.instance_id)
            w.nstring(m.client_id).nstring(m.client_host)
            w.nbytes(dict(m.protocols).get(group.protocol, b"") if group else b"").nbytes(m.assignment)
        if v >= 3:
            w.i32(-2147483648)
    return bytes(w)


async def list_groups(s: Session, v: int, r: Reader) -> bytes:
    w = Writer()
    if v >= 1:
        w.i32(0)
    groups = [g for g in s.cluster.groups.groups.values() if g.members or g.offsets]
    return bytes(w.i16(e.NONE).array(groups, lambda w, g: w.nstring(g.group_id).nstring(g.protocol_type or "consumer")))


# --- transactions --------------------------------------------------------------------------------


async def init_producer_id(s: Session, v: int, r: Reader) -> bytes:
    txn_id, timeout_ms = r.nstring(), r.i32()
    error, pid, epoch = s.cluster.txns.init(txn_id, timeout_ms)
    return bytes(Writer().i32(0).i16(error).i64(pid).i16(epoch))


async def add_partitions_to_txn(s: Session, v: int, r: Reader) -> bytes:
    txn_id, pid, epoch = r.string(), r.i64(), r.i16()
    topics = r.array(_topic_partitions)
    missing = [(n, i) for n, parts in topics for i in parts if s.cluster.log(n, i) is None]
    error = e.UNKNOWN_TOPIC_OR_PARTITION if missing else s.cluster.txns.add_partitions(
        txn_id, pid, epoch, [(n, i) for n, parts in topics for i in parts])
    w = Writer().i32(0)
    return bytes(w.array(topics, lambda w, t: w.nstring(t[0]).array(t[1], lambda w, i: w.i32(i).i16(error))))


async def add_offsets_to_txn(s: Session, v: int, r: Reader) -> bytes:
    txn_id, pid, epoch, group_id = r.string(), r.i64(), r.i16(), r.string()
    return bytes(Writer().i32(0).i16(s.cluster.txns.add_offsets(txn_id, pid, epoch, group_id)))


async def end_txn(s: Session, v: int, r: Reader) -> bytes:
    txn_id, pid, epoch, commit = r.string(), r.i64(), r.i16(), r.boolean()
    return bytes(Writer().i32(0).i16(s.cluster.txns.end(txn_id, pid, epoch, commit)))


async def txn_offset_commit(s: Session, v: int, r: Reader) -> bytes:
    txn_id, group_id, pid, epoch = r.string(), r.string(), r.i64(), r.i16()

    def partition(r: Reader) -> tuple[int, int, str | None]:
        index, offset = r.i32(), r.i64()
        if v >= 2:
            r.i32()
        return index, offset, r.nstring()

    topics = r.array(lambda r: (r.string(), r.array(partition)))
    offsets = {(name, index): (offset, meta) for name, parts in topics for index, offset, meta in parts}
    error = s.cluster.txns.commit_offsets(txn_id, pid, epoch, group_id, offsets)
    w = Writer().i32(0)
    return bytes(w.array(topics, lambda w, t: w.nstring(t[0]).array(t[1], lambda w, p: w.i32(p[0]).i16(error))))


# api key -> (lowest version, highest version, handler): only versions without tagged fields,
# except ApiVersions v3, whose answer keeps the classic header.
VERSIONS: dict[int, tuple[int, int, Handler]] = {
    0: (3, 8, produce),
    1: (4, 11, fetch),
    2: (1, 5, list_offsets),
    3: (1, 8, metadata),
    8: (2, 7, offset_commit),
    9: (1, 5, offset_fetch),
    10: (0, 2, find_coordinator),
    11: (0, 5, join_group),
    12: (0, 3, heartbeat),
    13: (0, 3, leave_group),
    14: (0, 3, sync_group),
    15: (0, 4, describe_groups),
    16: (0, 2, list_groups),
    18: (0, 3, api_versions),
    19: (0, 4, create_topics),
    20: (0, 3, delete_topics),
    21: (0, 1, delete_records),
    22: (0, 1, init_producer_id),
    24: (0, 2, add_partitions_to_txn),
    25: (0, 2, add_offsets_to_txn),
    26: (0, 2, end_txn),
    28: (0, 2, txn_offset_commit),
    32: (0, 2, describe_configs),
}

API_VERSIONS_KEY = 18
