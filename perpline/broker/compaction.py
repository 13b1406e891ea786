"""Log compaction for `cleanup.policy=compact` topics (the processors' state changelogs).

Below the last stable offset, only the newest record of each key is kept (a tombstone included), as
Kafka's cleaner does; records of aborted transactions and the transaction markers go too. Offsets never
change: a batch keeps its base offset and last offset delta and loses records; an emptied batch goes,
leaving a gap that readers step over (librdkafka does, as on any compacted topic). The log's last batch
always stays, so a reader's position still reaches the end of the log (Quix's state recovery waits for
that). Batches are uncompressed here (Quix writes its changelogs so); a compressed batch is kept whole.
"""

from __future__ import annotations

import bisect
import os
import struct
from array import array
from dataclasses import dataclass

from perpline.broker.partition import ATTR_CONTROL, HEADER, HEADER_SIZE, PartitionLog
from perpline.broker.wire import crc32c, varint_at

COMPRESSION_MASK = 0x07
# compact once the log grew this much (and at least doubled) since the last time
COMPACT_MIN_GROWTH_BYTES = int(os.environ.get("PERPLINE_BROKER_COMPACT_BYTES", str(4 << 20)))


@dataclass(slots=True)
class Record:
    offset_delta: int
    key: bytes | None
    raw: bytes  # the whole record, its length prefix included


def records_of(batch: bytes) -> list[Record]:
    """The records of an uncompressed v2 batch (key and offset delta parsed, the rest kept raw)."""
    out, pos = [], HEADER_SIZE
    count = HEADER.unpack_from(batch, 0)[12]
    for _ in range(count):
        start = pos
        length, body = varint_at(batch, pos)
        end = body + length
        _, pos = varint_at(batch, body + 1)  # after the attributes byte: the timestamp delta
        offset_delta, pos = varint_at(batch, pos)
        key_length, pos = varint_at(batch, pos)
        key = None if key_length < 0 else batch[pos:pos + key_length]
        out.append(Record(offset_delta, key, batch[start:end]))
        pos = end
    return out


def rebuild(batch: bytes, kept: list[Record]) -> bytes:
    """`batch` with only the `kept` records: same base offset and last offset delta, new count, length, CRC."""
    records = b"".join(r.raw for r in kept)
    after_crc = bytearray(batch[21:HEADER_SIZE]) + records
    struct.pack_into(">i", after_crc, HEADER_SIZE - 4 - 21, len(kept))
    length = HEADER_SIZE - 12 + len(records)
    return batch[:8] + struct.pack(">i", length) + batch[12:17] + struct.pack(">I", crc32c(bytes(after_crc))) \
        + bytes(after_crc)


def compact(log: PartitionLog) -> int:
    """Compact `log` below its last stable offset, never its last batch; returns the bytes freed."""
    assert log.spilled == 0, "a compacted topic never spills"
    clean_below = min(log.last_stable, log.starts[-1] if log.starts else 0)
    stop = bisect.bisect_right(log.ends, clean_below)
    done = [(pid, first, marker) for marker, pid, first in log.aborted if marker < clean_below]
    aborted: dict[int, list[tuple[int, int]]] = {}
    for pid, first, marker in done:
        aborted.setdefault(pid, []).append((first, marker))
    seen: set[bytes] = set()
    for index in range(stop, len(log.starts)):  # the last batch stays, but if it is stable it is newest
        raw = log.batches[index]
        attributes = HEADER.unpack_from(raw, 0)[5]
        if log.ends[index] <= log.last_stable and not attributes & (ATTR_CONTROL | COMPRESSION_MASK):
            seen.update(k for k in _keys(raw, log.starts[index], log.batch_keys) if k is not None)
    freed = 0
    keep_index: list[int] = []
    for index in range(stop - 1, -1, -1):
        raw = log.batches[index]
        new = _clean_batch(raw, log.starts[index], aborted, seen, log.batch_keys)
        if new is raw:
            keep_index.append(index)
            continue
        freed += len(raw) - (len(new) if new else 0)
        if new:
            log.batches[index] = new
            keep_index.append(index)
    if len(keep_index) < stop:
        order = sorted(keep_index) + list(range(stop, len(log.starts)))
        log.starts = array("q", (log.starts[i] for i in order))
        log.batches = [log.batches[i] for i in order]
        log.ends = array("q", (log.ends[i] for i in order))
        log.max_ts = array("q", (log.max_ts[i] for i in order))
    if len(log.batch_keys) > len(log.starts):
        log.batch_keys = {base: log.batch_keys[base] for base in log.starts if base in log.batch_keys}
    cut = bisect.bisect_left(log.aborted_ends, clean_below)
    del log.aborted[:cut]
    del log.aborted_ends[:cut]
    log.bytes_stored -= freed
    return freed


def _keys(raw: bytes, base: int, cache: dict[int, tuple[bytes | None, ...]]) -> tuple[bytes | None, ...]:
    """The record keys of a batch, parsed once (a batch compaction left alone is not parsed again)."""
    keys = cache.get(base)
    if keys is None:
        keys = cache[base] = tuple(r.key for r in records_of(raw))
    return keys


def _clean_batch(raw: bytes, base: int, aborted: dict[int, list[tuple[int, int]]], seen: set[bytes],
                 cache: dict[int, tuple[bytes | None, ...]]) -> bytes | None:
    """The batch with what compaction removes taken out: `raw` itself if nothing, None if everything."""
    (_, _, _, _, _, attributes, _, _, _, pid, _, _, _) = HEADER.unpack_from(raw, 0)
    if attributes & ATTR_CONTROL:
        return None
    if any(first <= base <= marker for first, marker in aborted.get(pid, ())):
        return None
    if attributes & COMPRESSION_MASK:
        return raw  # not ours to rewrite: kept whole
    named = [k for k in _keys(raw, base, cache) if k is not None]
    if len(set(named)) == len(named) and seen.isdisjoint(named):
        seen.update(named)
        return raw
    records = records_of(raw)
    kept: list[Record] = []
    for record in reversed(records):
        if record.key is None or record.key not in seen:
            kept.append(record)
            if record.key is not None:
                seen.add(record.key)
    if not kept:
        return None
    kept.reverse()
    cache[base] = tuple(r.key for r in kept)
    return rebuild(raw, kept)
