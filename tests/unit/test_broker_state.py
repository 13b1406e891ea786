"""The embedded broker's state without a network: partition logs, transactions, groups, the codec."""

from __future__ import annotations

import asyncio
import struct

import pytest

from perpline.broker import errors as e
from perpline.broker.cluster import Cluster, _apply_retention
from perpline.broker.compaction import compact, records_of
from perpline.broker.groups import Groups
from perpline.broker.partition import (
    ATTR_CONTROL,
    ATTR_TRANSACTIONAL,
    HEADER,
    BatchError,
    PartitionLog,
    control_batch,
    split_batches,
)
from perpline.broker.wire import Reader, Writer, crc32c, varint


def batch(records: int, pid: int = -1, epoch: int = 0, seq: int = -1, transactional: bool = False,
          ts: int = 1_000) -> bytes:
    """A v2 record batch header with `records` offsets and a dummy body (the broker never parses records)."""
    body = b"r" * (5 * records)
    attributes = ATTR_TRANSACTIONAL if transactional else 0
    length = HEADER.size - 12 + len(body)
    return HEADER.pack(0, length, -1, 2, 0, attributes, records - 1, ts, ts, pid, epoch, seq, records) + body


def base_offset(raw: bytes) -> int:
    return int(struct.unpack_from(">q", raw, 0)[0])


def test_crc32c_matches_the_standard_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283


def test_writer_and_reader_round_trip_every_primitive() -> None:
    raw = bytes(Writer().i8(-3).i16(-300).i32(70_000).i64(-(1 << 40)).nstring("héllo").nstring(None)
                .nbytes(b"\x00\x01").nbytes(None).array([1, 2], lambda w, x: w.i32(x)).uvarint(300))
    r = Reader(raw)
    assert (r.i8(), r.i16(), r.i32(), r.i64()) == (-3, -300, 70_000, -(1 << 40))
    assert (r.nstring(), r.nstring(), r.nbytes(), r.nbytes()) == ("héllo", None, b"\x00\x01", None)
    assert r.array(Reader.i32) == [1, 2] and r.uvarint() == 300 and r.pos == len(raw)


def test_split_refuses_truncated_and_old_batches() -> None:
    with pytest.raises(BatchError):
        split_batches(batch(2)[:-1])
    old = bytearray(batch(1))
    old[16] = 1  # magic v1
    with pytest.raises(BatchError):
        split_batches(bytes(old))
    heads = split_batches(batch(2) + batch(3))
    assert [h.last_offset_delta for h, _ in heads] == [1, 2]


def test_offsets_are_dense_and_reads_start_at_the_batch_holding_the_offset() -> None:
    log = PartitionLog()
    bases = [log.append(head, raw) for head, raw in split_batches(batch(3) + batch(1) + batch(2))]
    assert bases == [0, 3, 4] and log.end == 6
    read = log.read(3, log.end, 1 << 20)
    assert base_offset(read) == 3 and len(read) == len(batch(1)) + len(batch(2))
    inside = log.read(5, log.end, 1 << 20)  # offset 5 is the second record of the batch at 4
    assert base_offset(inside) == 4 and len(inside) == len(batch(2))
    assert log.read(6, log.end, 1 << 20) == b""
    assert base_offset(log.read(0, log.end, 1)) == 0  # at least one batch even over the byte budget


def test_a_resent_batch_is_stored_once() -> None:
    log = PartitionLog()
    ((head, raw),) = split_batches(batch(2, pid=7, epoch=0, seq=0))
    assert log.duplicate_of(head) is None
    first = log.append(head, raw)
    assert log.duplicate_of(head) == first
    ((later, _),) = split_batches(batch(2, pid=7, epoch=1, seq=0))
    assert log.duplicate_of(later) is None  # a new epoch starts its sequence again


def test_open_transactions_hold_the_last_stable_offset_and_aborts_are_listed() -> None:
    log = PartitionLog()
    ((plain, raw_plain),) = split_batches(batch(1))
    ((txn, raw_txn),) = split_batches(batch(2, pid=9, seq=0, transactional=True))
    log.append(plain, raw_plain)
    log.append(txn, raw_txn)
    assert log.last_stable == 1 and log.end == 3
    log.end_txn(9, 0, commit=False)
    assert log.last_stable == log.end == 4
    assert log.aborted_in(0, 4) == [(9, 1)] and log.aborted_in(4, 4) == []
    marker = log.read(3, 4, 1 << 20)
    assert HEADER.unpack_from(marker, 0)[5] == ATTR_TRANSACTIONAL | ATTR_CONTROL
    assert struct.unpack_from(">I", marker, 17)[0] == crc32c(marker[21:])


def test_control_batch_is_a_valid_single_record_batch() -> None:
    raw = control_batch(42, 5, 1, 1, 123)
    ((head, _),) = split_batches(raw)
    assert base_offset(raw) == 42 and head.last_offset_delta == 0 and head.producer_id == 5


def test_trim_and_retention_never_pass_an_open_transaction() -> None:
    log = PartitionLog()
    for head, raw in split_batches(batch(2, ts=1) + batch(2, ts=2)):
        log.append(head, raw)
    ((txn, raw_txn),) = split_batches(batch(1, pid=3, seq=0, transactional=True, ts=3))
    log.append(txn, raw_txn)
    _apply_retention(log, now_ms=10_000, retention_ms=1_000, retention_bytes=-1)
    assert log.log_start == 4 and list(log.starts) == [4]  # the old batches went, the open transaction stayed
    assert log.trim_to(100) == log.end


def test_init_producer_id_aborts_what_the_previous_holder_left_and_fences_it() -> None:
    cluster = Cluster("127.0.0.1", 1)
    cluster.create_topic("t", 1, {})
    error, pid, epoch = cluster.txns.init("app-0", 10_000)
    assert error == e.NONE and epoch == 0
    assert cluster.txns.add_partitions("app-0", pid, epoch, [("t", 0)]) == e.NONE
    ((head, raw),) = split_batches(batch(1, pid=pid, epoch=epoch, seq=0, transactional=True))
    log = cluster.log("t", 0)
    assert log is not None
    log.append(head, raw)
    assert log.last_stable == 0
    _, same_pid, new_epoch = cluster.txns.init("app-0", 10_000)  # a restart
    assert same_pid == pid and new_epoch == 1 and log.last_stable == log.end and log.aborted_in(0, 2) == [(pid, 0)]
    assert cluster.txns.fenced(pid, epoch) and not cluster.txns.fenced(pid, new_epoch)
    assert cluster.txns.end("app-0", pid, epoch, commit=True) == e.INVALID_PRODUCER_EPOCH


def test_offsets_sent_to_a_transaction_count_only_when_it_commits() -> None:
    cluster = Cluster("127.0.0.1", 1)
    _, pid, epoch = cluster.txns.init("app-0", 10_000)
    assert cluster.txns.add_offsets("app-0", pid, epoch, "g") == e.NONE
    assert cluster.txns.commit_offsets("app-0", pid, epoch, "g", {("t", 0): (5, None)}) == e.NONE
    assert cluster.txns.end("app-0", pid, epoch, commit=False) == e.NONE
    assert cluster.groups.get("g").offsets == {}
    cluster.txns.add_offsets("app-0", pid, epoch, "g")
    cluster.txns.commit_offsets("app-0", pid, epoch, "g", {("t", 0): (7, None)})
    cluster.txns.end("app-0", pid, epoch, commit=True)
    assert cluster.groups.get("g").offsets == {("t", 0): (7, None)}


def test_a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() -> None:
    cluster = Cluster("127.0.0.1", 1)
    cluster.create_topic("t", 1, {})
    _, pid, epoch = cluster.txns.init("slow", 1)
    cluster.txns.add_partitions("slow", pid, epoch, [("t", 0)])
    cluster.txns.by_id["slow"].began -= 1.0
    assert cluster.txns.expire() == ["slow"]
    assert cluster.txns.fenced(pid, epoch)
    log = cluster.log("t", 0)
    assert log is not None and log.end == 1  # the abort marker


def test_two_members_share_a_generation_and_a_silent_one_is_removed() -> None:
    async def scenario() -> None:
        groups = Groups()
        first = await groups.join("g", "", None, "c1", "h", 100, 5_000, "consumer", [("range", b"m1")], False)
        assert first.error == e.NONE and first.leader == first.member_id and first.generation == 1
        assert (await groups.sync("g", 1, first.member_id, {first.member_id: b"a1"})) == (e.NONE, b"a1")
        second_join = asyncio.ensure_future(
            groups.join("g", "", None, "c2", "h", 100, 5_000, "consumer", [("range", b"m2")], False))
        await asyncio.sleep(0)
        assert groups.heartbeat("g", 1, first.member_id) == e.REBALANCE_IN_PROGRESS
        rejoin = await groups.join("g", first.member_id, None, "c1", "h", 100, 5_000, "consumer",
                                   [("range", b"m1")], False)
        second = await second_join
        assert rejoin.generation == second.generation == 2 and len(rejoin.members) == 2 and second.members == []
        follower = asyncio.ensure_future(groups.sync("g", 2, second.member_id, {}))
        await asyncio.sleep(0)
        await groups.sync("g", 2, first.member_id, {first.member_id: b"a1", second.member_id: b"a2"})
        assert (await follower) == (e.NONE, b"a2")
        groups.groups["g"].members[second.member_id].last_seen -= 1.0
        groups.expire()
        assert list(groups.groups["g"].members) == [first.member_id]
        assert groups.heartbeat("g", 2, first.member_id) == e.REBALANCE_IN_PROGRESS

    asyncio.run(scenario())


def test_a_new_member_must_come_back_with_its_id_and_unknown_ids_are_refused() -> None:
    async def scenario() -> None:
        groups = Groups()
        asked = await groups.join("g", "", None, "c", "h", 100, 5_000, "consumer", [("range", b"")], True)
        assert asked.error == e.MEMBER_ID_REQUIRED and asked.member_id
        joined = await groups.join("g", asked.member_id, None, "c", "h", 100, 5_000, "consumer", [("range", b"")],
                                   True)
        assert joined.error == e.NONE and joined.member_id == asked.member_id
        stranger = await groups.join("g", "nobody", None, "c", "h", 100, 5_000, "consumer", [("range", b"")], True)
        assert stranger.error == e.UNKNOWN_MEMBER_ID

    asyncio.run(scenario())


def test_a_static_member_that_joins_again_replaces_its_dead_incarnation_at_once() -> None:
    async def scenario() -> None:
        groups = Groups()
        first = await groups.join("g", "", "accounts-0", "c", "h", 60_000, 60_000, "consumer", [("range", b"")], True)
        assert first.error == e.NONE and first.generation == 1  # no MEMBER_ID_REQUIRED round trip
        await groups.sync("g", 1, first.member_id, {first.member_id: b"all"})
        again = await groups.join("g", "", "accounts-0", "c", "h", 60_000, 60_000, "consumer", [("range", b"")],
                                  True)  # the restarted process, long before the old session would time out
        assert again.error == e.NONE and again.generation == 2 and again.leader == again.member_id
        assert list(groups.groups["g"].members) == [again.member_id]
        old = await groups.join("g", first.member_id, "accounts-0", "c", "h", 60_000, 60_000, "consumer",
                                [("range", b"")], True)
        assert old.error == e.FENCED_INSTANCE_ID

    asyncio.run(scenario())


def keyed_batch(pairs: list[tuple[bytes | None, bytes | None]], pid: int = -1, transactional: bool = False) -> bytes:
    """A real uncompressed v2 batch with one record per (key, value); a None value is a tombstone."""
    records = b""
    for delta, (key, value) in enumerate(pairs):
        body = b"\x00" + varint(0) + varint(delta)
        body += varint(-1) if key is None else varint(len(key)) + key
        body += varint(-1) if value is None else varint(len(value)) + value
        body += varint(0)
        records += varint(len(body)) + body
    attributes = ATTR_TRANSACTIONAL if transactional else 0
    after_crc = struct.pack(">hiqqqhii", attributes, len(pairs) - 1, 1, 1, pid, 0, 0 if pid >= 0 else -1,
                            len(pairs)) + records
    return struct.pack(">qiib", 0, 9 + len(after_crc), -1, 2) + struct.pack(">I", crc32c(after_crc)) + after_crc


def _keys_and_values(log: PartitionLog) -> list[tuple[int, bytes | None]]:
    out = []
    for base, raw in zip(log.starts, log.batches, strict=True):
        assert struct.unpack_from(">I", raw, 17)[0] == crc32c(raw[21:])  # every rewritten batch has a valid CRC
        if not HEADER.unpack_from(raw, 0)[5] & ATTR_CONTROL:
            out += [(base + r.offset_delta, r.key) for r in records_of(raw)]
    return out


def test_compaction_keeps_the_newest_record_of_each_key_and_every_offset() -> None:
    log = PartitionLog()
    for pairs in ([(b"a", b"1"), (b"b", b"1")], [(b"a", b"2")], [(b"c", b"1"), (b"b", None)], [(b"a", b"3")]):
        ((head, raw),) = split_batches(keyed_batch(pairs))
        log.append(head, raw)
    before_end = log.end
    freed = compact(log)
    assert freed > 0 and log.end == before_end
    assert _keys_and_values(log) == [(3, b"c"), (4, b"b"), (5, b"a")]  # b's tombstone stays, as its newest
    assert log.read(0, log.end, 1 << 20)  # a reader from offset 0 steps over the gap to offset 3
    assert base_offset(log.read(0, log.end, 1 << 20)) == 3


def test_compaction_drops_aborted_records_and_markers_but_never_the_last_batch_or_an_open_transaction() -> None:
    log = PartitionLog()
    ((aborted, raw_a),) = split_batches(keyed_batch([(b"k", b"aborted")], pid=5, transactional=True))
    log.append(aborted, raw_a)
    log.end_txn(5, 0, commit=False)
    ((kept, raw_k),) = split_batches(keyed_batch([(b"k", b"committed")], pid=6, transactional=True))
    log.append(kept, raw_k)
    log.end_txn(6, 0, commit=True)
    ((open_, raw_o),) = split_batches(keyed_batch([(b"k", b"open")], pid=7, transactional=True))
    log.append(open_, raw_o)
    compact(log)
    assert _keys_and_values(log) == [(2, b"k"), (4, b"k")]  # committed kept (the open one may abort), the rest gone
    assert log.aborted == [] and log.last_stable == 4
    log.end_txn(7, 0, commit=True)
    compact(log)
    assert log.starts[-1] == 5 and log.ends[-1] == log.end  # the final marker stays: readers reach the end


def filled(log: PartitionLog, batches: int) -> None:
    for k in range(batches):
        raw = batch(1 + k % 3, ts=1_000 + k)
        log.append(split_batches(raw)[0][0], raw)


def test_spilled_batches_read_back_exactly_as_the_ones_held_in_memory(tmp_path: object) -> None:
    from pathlib import Path

    from perpline.broker.spill import SpillFile

    memory, spilling = PartitionLog(), PartitionLog(SpillFile(Path(str(tmp_path)) / "t-0.batches"))
    filled(memory, 60)
    filled(spilling, 60)
    kept = spilling.memory_bytes // 4
    assert spilling.spill_oldest(kept) > 0 and 0 < spilling.spilled < 60 and spilling.memory_bytes <= kept
    assert spilling.bytes_stored == memory.bytes_stored and spilling.spill is not None
    assert spilling.spill.bytes + spilling.memory_bytes == memory.bytes_stored
    for offset in range(0, memory.end, 7):  # reads that start, cross and end on either side of the boundary
        for limit, max_bytes in ((memory.end, 1 << 20), (offset + 5, 1 << 20), (memory.end, 150), (memory.end, 1)):
            assert spilling.read(offset, limit, max_bytes) == memory.read(offset, limit, max_bytes), (offset, limit)
    assert [spilling.size_of(i) for i in range(60)] == [memory.size_of(i) for i in range(60)]
    assert spilling.offset_for_time(1_010) == memory.offset_for_time(1_010)
    boundary = spilling.starts[spilling.spilled]
    for cut in (boundary - 3, boundary + 4, memory.end):  # retention inside the file, across it, everything
        assert spilling.trim_to(cut) == memory.trim_to(cut)
        assert spilling.bytes_stored == memory.bytes_stored and list(spilling.starts) == list(memory.starts)
        assert spilling.read(cut, memory.end, 1 << 20) == memory.read(cut, memory.end, 1 << 20)
    assert spilling.spilled == 0 and spilling.spill.bytes == 0 and len(spilling.spill) == 0
    assert (Path(str(tmp_path)) / "t-0.batches").stat().st_size == 0  # the file shrinks once all is gone


def test_a_cluster_spills_deleting_topics_past_the_threshold_and_never_compacted_ones(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from perpline.broker import cluster as cluster_module

    monkeypatch.setattr(cluster_module, "SPILL_BYTES", 2_000)
    cluster = Cluster("127.0.0.1", 1, Path(str(tmp_path)))
    assert cluster.create_topic("events", 1, {"retention.ms": "-1"}) == e.NONE
    assert cluster.create_topic("changelog", 1, {"cleanup.policy": "compact"}) == e.NONE
    events, changelog = cluster.log("events", 0), cluster.log("changelog", 0)
    assert events is not None and changelog is not None and changelog.spill is None
    filled(events, 200)
    reference = events.read(0, events.end, 1 << 30)
    cluster.housekeeping()
    assert events.spilled > 0 and events.memory_bytes <= 1_000 + len(events.batches[-1])
    assert events.read(0, events.end, 1 << 30) == reference
    assert cluster.delete_topic("events") == e.NONE and not (Path(str(tmp_path)) / "events-0.batches").exists()
