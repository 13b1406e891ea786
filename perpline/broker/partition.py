"""One partition's log in the embedded broker: record batches in memory, offsets, transactions' bounds.

A produced batch is stored as the bytes the producer sent with its base offset written in (the CRC
covers only what follows the attributes, so it stays valid). Offsets are dense: a batch takes
`last_offset_delta + 1` of them, control batches (transaction markers) one. Reads find their first
batch by bisection; nothing here walks the whole log.

A deleting topic's partition may keep its oldest batches in a spill file (perpline.broker.spill):
`size_of` and `read` look there for the first `spilled` batches.

Transactions: `open_txns` holds each producer's first offset of its open transaction; the last stable
offset (LSO) is the lowest of them, or the end of the log. `aborted` lists every aborted transaction
(first offset, marker offset) so a read_committed fetch can tell the client which records to drop.
"""

from __future__ import annotations

import asyncio
import bisect
import struct
import time
from array import array
from collections import deque
from dataclasses import dataclass, field

from perpline.broker.spill import SpillFile
from perpline.broker.wire import crc32c, u32, varint

HEADER = struct.Struct(">qiibIhiqqqhii")  # base offset .. records count: 61 bytes
HEADER_SIZE = HEADER.size
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
NO_PRODUCER = -1
DEDUP_BATCHES = 5  # Kafka remembers a producer's last five batches per partition (max.in.flight 5)
MARKER_ABORT, MARKER_COMMIT = 0, 1


class BatchError(ValueError):
    """A produced record set the broker refuses (CORRUPT_MESSAGE)."""


@dataclass(frozen=True, slots=True)
class BatchHead:
    length: int  # bytes of this batch, header included
    attributes: int
    last_offset_delta: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int

    @property
    def transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)


def split_batches(records: bytes) -> list[tuple[BatchHead, bytes]]:
    """The v2 record batches of a produce request's record set, each with its parsed header."""
    out, pos = [], 0
    while pos < len(records):
        if len(records) - pos < HEADER_SIZE:
            raise BatchError("truncated batch header")
        (_, length, _, magic, _, attributes, last_delta, _, max_ts, pid, epoch, base_seq,
         count) = HEADER.unpack_from(records, pos)
        size = 12 + length
        if magic != 2:
            raise BatchError(f"record batch magic {magic}: only v2 batches are accepted")
        if size < HEADER_SIZE or pos + size > len(records) or last_delta < 0 or count < 0:
            raise BatchError("batch length out of bounds")
        out.append((BatchHead(size, attributes, last_delta, max_ts, pid, epoch, base_seq), records[pos:pos + size]))
        pos += size
    if not out:
        raise BatchError("empty record set")
    return out


def control_batch(offset: int, producer_id: int, producer_epoch: int, marker: int, now_ms: int) -> bytes:
    """A transaction marker: one control record (key: version 0, type; value: version 0, epoch 0)."""
    key = struct.pack(">hh", 0, marker)
    value = struct.pack(">hi", 0, 0)
    body = b"\x00" + varint(0) + varint(0) + varint(len(key)) + key + varint(len(value)) + value + varint(0)
    record = varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", ATTR_TRANSACTIONAL | ATTR_CONTROL, 0, now_ms, now_ms, producer_id,
                            producer_epoch, -1, 1) + record
    length = 4 + 1 + 4 + len(after_crc)  # leader epoch, magic, crc, the rest
    return struct.pack(">qiib", offset, length, 0, 2) + u32(crc32c(after_crc)) + after_crc


@dataclass(slots=True)
class ProducerSeqs:
    epoch: int
    recent: deque[tuple[int, int, int]] = field(default_factory=lambda: deque(maxlen=DEDUP_BATCHES))


class PartitionLog:
    """Batches of one topic-partition, with the offsets and transaction state a fetch needs."""

    __slots__ = ("starts", "batches", "ends", "max_ts", "log_start", "end", "open_txns", "aborted",
                 "aborted_ends", "producers", "waiters", "bytes_stored", "compacted_bytes", "batch_keys", "spill",
                 "spilled")

    def __init__(self, spill: SpillFile | None = None) -> None:
        # the per-batch columns are arrays of 8-byte integers: a long log holds millions of batches
        self.starts = array("q")  # base offset of each stored batch (bisect key)
        self.batches: list[bytes] = []  # b"" for a batch held in the spill file
        self.ends = array("q")  # one past each batch's last offset
        self.max_ts = array("q")
        self.log_start = 0
        self.end = 0  # the high watermark: the next offset to assign (one replica: log end = watermark)
        self.open_txns: dict[int, int] = {}  # producer id -> first offset of its open transaction
        self.aborted: list[tuple[int, int, int]] = []  # (marker offset, producer id, first offset)
        self.aborted_ends: list[int] = []
        self.producers: dict[int, ProducerSeqs] = {}
        self.waiters: list[asyncio.Future[None]] = []
        self.bytes_stored = 0
        self.compacted_bytes = 0  # bytes_stored right after the last compaction
        self.batch_keys: dict[int, tuple[bytes | None, ...]] = {}  # compaction: record keys by batch base offset
        self.spill = spill  # where the oldest batches go once memory_bytes passes the threshold (perpline.broker.spill)
        self.spilled = 0  # the first `spilled` batches are in the spill file

    @property
    def memory_bytes(self) -> int:
        return self.bytes_stored - (self.spill.bytes if self.spill is not None else 0)

    def size_of(self, index: int) -> int:
        if index < self.spilled:
            assert self.spill is not None
            return self.spill.size(index)
        return len(self.batches[index])

    def spill_oldest(self, keep_bytes: int) -> int:
        """Move the oldest batches held in memory to the spill file until at most `keep_bytes` stay in
        memory (the newest batch always stays); returns how many moved."""
        if self.spill is None:
            return 0
        moving: list[bytes] = []
        in_memory = self.memory_bytes
        index = self.spilled
        while in_memory > keep_bytes and index < len(self.batches) - 1:
            moving.append(self.batches[index])
            in_memory -= len(self.batches[index])
            index += 1
        if moving:
            self.spill.append(moving)
            for i in range(self.spilled, index):
                self.batches[i] = b""
            self.spilled = index
        return len(moving)

    # --- writing -------------------------------------------------------------------------------

    def duplicate_of(self, head: BatchHead) -> int | None:
        """The base offset this producer's batch was stored at before (a retried send), else None."""
        if head.producer_id == NO_PRODUCER or head.base_sequence < 0:
            return None
        seqs = self.producers.get(head.producer_id)
        if seqs is None or seqs.epoch != head.producer_epoch:
            return None
        for first_seq, last_seq, base in seqs.recent:
            if first_seq == head.base_sequence and last_seq == head.base_sequence + head.last_offset_delta:
                return base
        return None

    def append(self, head: BatchHead, batch: bytes) -> int:
        """Store one produced batch at the end of the log; returns its base offset."""
        base = self.end
        stored = struct.pack(">q", base) + batch[8:]
        self._store(stored, base, base + head.last_offset_delta + 1, head.max_timestamp)
        if head.producer_id != NO_PRODUCER and head.base_sequence >= 0:
            seqs = self.producers.get(head.producer_id)
            if seqs is None or seqs.epoch != head.producer_epoch:
                seqs = self.producers[head.producer_id] = ProducerSeqs(head.producer_epoch)
            seqs.recent.append((head.base_sequence, head.base_sequence + head.last_offset_delta, base))
        if head.transactional and head.producer_id not in self.open_txns:
            self.open_txns[head.producer_id] = base
        self.wake()
        return base

    def end_txn(self, producer_id: int, producer_epoch: int, commit: bool) -> None:
        """Write the transaction's marker and close it here (a partition it never wrote gets one too)."""
        offset = self.end
        marker = MARKER_COMMIT if commit else MARKER_ABORT
        now_ms = int(time.time() * 1000)
        self._store(control_batch(offset, producer_id, producer_epoch, marker, now_ms), offset, offset + 1, now_ms)
        first = self.open_txns.pop(producer_id, None)
        if not commit and first is not None:
            self.aborted.append((offset, producer_id, first))
            self.aborted_ends.append(offset)
        self.wake()

    def _store(self, batch: bytes, base: int, end: int, max_ts: int) -> None:
        assert base == self.end and end > base, (base, end, self.end)
        self.starts.append(base)
        self.batches.append(batch)
        self.ends.append(end)
        self.max_ts.append(max_ts)
        self.end = end
        self.bytes_stored += len(batch)

    # --- reading -------------------------------------------------------------------------------

    @property
    def last_stable(self) -> int:
        return min(self.open_txns.values()) if self.open_txns else self.end

    def read(self, offset: int, limit: int, max_bytes: int) -> bytes:
        """Whole batches holding offsets from `offset` below `limit`, at least one, about max_bytes."""
        index = bisect.bisect_right(self.starts, offset) - 1
        index = max(index, 0)
        parts: list[bytes] = []
        total = 0
        first_spilled = -1  # a run of spilled batches being gathered: [first_spilled, index)
        while index < len(self.starts) and self.starts[index] < limit:
            if self.ends[index] > offset:
                size = self.size_of(index)
                if total and total + size > max_bytes:
                    break
                if index < self.spilled:
                    first_spilled = index if first_spilled < 0 else first_spilled
                else:
                    if first_spilled >= 0:
                        parts.append(self._read_spilled(first_spilled, index))
                        first_spilled = -1
                    parts.append(self.batches[index])
                total += size
            index += 1
        if first_spilled >= 0:
            parts.append(self._read_spilled(first_spilled, index))
        return b"".join(parts)

    def _read_spilled(self, first: int, last: int) -> bytes:
        assert self.spill is not None and last <= self.spilled
        return self.spill.read(first, last)

    def aborted_in(self, offset: int, limit: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping [offset, limit)."""
        index = bisect.bisect_left(self.aborted_ends, offset)
        return [(pid, first) for _, pid, first in self.aborted[index:] if first < limit]

    def offset_for_time(self, timestamp_ms: int) -> int:
        """The first offset of the first batch whose newest record is at or after timestamp_ms."""
        for index, max_ts in enumerate(self.max_ts):
            if max_ts >= timestamp_ms:
                return self.starts[index]
        return self.end

    # --- waiting -------------------------------------------------------------------------------

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def trim_to(self, offset: int) -> int:
        """Delete every batch wholly below `offset` (DeleteRecords, retention); returns the new start."""
        offset = min(max(offset, self.log_start), self.end)
        drop = bisect.bisect_right(self.ends, offset)
        if drop:
            from_file = min(drop, self.spilled)
            if from_file:
                assert self.spill is not None
                self.bytes_stored -= self.spill.drop(from_file)
                self.spilled -= from_file
            self.bytes_stored -= sum(len(b) for b in self.batches[from_file:drop])
            for column in (self.starts, self.batches, self.ends, self.max_ts):
                del column[:drop]
        self.log_start = offset
        cut = bisect.bisect_left(self.aborted_ends, offset)
        del self.aborted[:cut]
        del self.aborted_ends[:cut]
        return self.log_start
