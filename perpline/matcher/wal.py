"""Write-ahead log: one append-only file of records `u32 length | u32 crc32(payload) | payload`.

- `Wal.append(payload)` / `Wal.append_batch(payloads)`: one write per batch (group commit),
  then an fsync according to the policy:
    BATCH    fsync after every append/append_batch: nothing returned is ever lost;
    INTERVAL fsync when at least `interval_ms` passed since the last one (a crash loses at
             most that window of acknowledged records);
    NEVER    the OS decides (tests, benchmarks).
  `flush()` fsyncs now whatever the policy; `close()` flushes.
- Payloads are opaque bytes (the runner writes the input plus its source offset), never
  empty: a zero length is how a zero-filled tail (a crash on some file systems) looks, so
  it is treated as corruption.
- `recover(path)` yields every good record in order and stops at the FIRST torn or corrupt
  one (short header, short payload, length 0 or over MAX_RECORD_BYTES, crc mismatch), then
  TRUNCATES the file there (logged, fsynced). It never yields a corrupt record. A corrupt
  record in the middle ends the log there too: the records after it were written later and
  cannot be replayed without the one lost, so they are cut (and logged with their byte
  count) rather than skipped. Truncation happens when the iterator is exhausted.
- Opening a `Wal` checks the tail the same way (verify_tail=True), so an append never
  lands behind garbage that recovery would stop at.
No segment rotation: the runner snapshots and replays records after the snapshot's position.
"""

from __future__ import annotations

import enum
import logging
import mmap
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("perpline.matcher.wal")

HEADER = struct.Struct("<II")
MAX_RECORD_BYTES = 4 * 1024 * 1024
MAX_BATCH_RECORDS = 100_000
DEFAULT_INTERVAL_MS = 50


class FsyncPolicy(enum.StrEnum):
    BATCH = "batch"
    INTERVAL = "interval"
    NEVER = "never"


POLICIES = tuple(p.value for p in FsyncPolicy)


def encode_record(payload: bytes) -> bytes:
    assert 0 < len(payload) <= MAX_RECORD_BYTES, "a WAL record is 1 byte .. MAX_RECORD_BYTES"
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


class Wal:
    def __init__(self, path: Path, fsync: str | FsyncPolicy = FsyncPolicy.BATCH,
                 interval_ms: int = DEFAULT_INTERVAL_MS, verify_tail: bool = True) -> None:
        assert 0 <= interval_ms <= 60_000
        self.policy = FsyncPolicy(fsync)
        self.fsync = self.policy.value  # kept for callers that read it as a string
        self.interval_s = interval_ms / 1000
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        if verify_tail and path.exists():
            for _ in recover(path):
                pass
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size_bytes = os.fstat(self._fd).st_size
        self._last_sync = time.monotonic()
        self._dirty = False
        self.records = 0  # appended by this instance

    def append(self, payload: bytes) -> None:
        self.append_batch([payload])

    def append_batch(self, payloads: list[bytes]) -> None:
        """Group commit: all records in one write, then the policy's fsync."""
        assert self._fd >= 0, "WAL closed"
        assert len(payloads) <= MAX_BATCH_RECORDS, "batch too large"
        if not payloads:
            return
        data = b"".join([encode_record(p) for p in payloads])
        view = memoryview(data)
        while view:  # os.write may write less than asked (signals, huge buffers)
            written = os.write(self._fd, view)
            assert written > 0, "WAL write made no progress"
            view = view[written:]
        self.size_bytes += len(data)
        self.records += len(payloads)
        self._dirty = True
        self._maybe_sync()

    def _maybe_sync(self) -> None:
        if self.policy is FsyncPolicy.BATCH:
            self.flush()
        elif self.policy is FsyncPolicy.INTERVAL and time.monotonic() - self._last_sync >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """fsync now, whatever the policy."""
        if self._fd >= 0 and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            self.flush()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Wal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def recover(path: Path) -> Iterator[bytes]:
    """Yield every good record; truncate the file at the first torn or corrupt one.

    The file is mapped, not read record by record: one header unpack and one payload copy per
    record (two reads per record made reading dominate a long replay)."""
    if not path.exists():
        return
    size = path.stat().st_size
    good_end = 0
    records = 0
    if size > 0:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            while good_end < size:
                payload = _record_at(data, good_end, size)
                if payload is None:
                    break
                good_end += HEADER.size + len(payload)
                records += 1
                yield payload
    if size > good_end:
        log.warning("WAL: truncating a torn or corrupt tail", extra={
            "path": str(path), "good_records": records, "from_bytes": size, "to_bytes": good_end,
            "dropped_bytes": size - good_end})
        with open(path, "r+b") as file:
            file.truncate(good_end)
            os.fsync(file.fileno())


def _record_at(data: mmap.mmap, offset: int, size: int) -> bytes | None:
    """The record at `offset` of the mapped file, or None (logged) when it is torn or corrupt."""
    if size - offset < HEADER.size:
        log.warning("WAL: torn record header", extra={"offset": offset})
        return None
    length, crc = HEADER.unpack_from(data, offset)
    if length == 0 or length > MAX_RECORD_BYTES:
        log.warning("WAL: bad record length", extra={"offset": offset, "length": length})
        return None
    start = offset + HEADER.size
    payload = data[start:start + length]
    if len(payload) < length:
        log.warning("WAL: torn record payload", extra={"offset": offset, "length": length, "have": len(payload)})
        return None
    if zlib.crc32(payload) != crc:
        log.warning("WAL: record crc mismatch", extra={"offset": offset, "length": length})
        return None
    return payload
