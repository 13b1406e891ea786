"""Write-ahead log: append-only records `u32 length | u32 crc32 | payload`, group commit per batch.

fsync policy: "batch" (fsync every append_batch: nothing acknowledged is lost),
"interval" (at most one fsync per FSYNC_INTERVAL_S), "never" (the OS decides).
Recovery reads records up to the first torn or corrupt one and truncates the file
there: a bad tail is never replayed. (A corrupt record in the middle also ends the
log there; what follows it cannot be trusted to be in order.)
"""

from __future__ import annotations

import logging
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
FSYNC_INTERVAL_S = 0.05
POLICIES = ("batch", "interval", "never")


class Wal:
    def __init__(self, path: Path, fsync: str = "batch") -> None:
        assert fsync in POLICIES, f"fsync policy must be one of {POLICIES}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fsync = fsync
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._last_sync = 0.0
        self.records = 0

    def append(self, payload: bytes) -> None:
        self.append_batch([payload])

    def append_batch(self, payloads: list[bytes]) -> None:
        assert len(payloads) <= MAX_BATCH_RECORDS, "batch too large"
        chunks = []
        for payload in payloads:
            assert len(payload) <= MAX_RECORD_BYTES, "record too large"
            chunks.append(HEADER.pack(len(payload), zlib.crc32(payload)))
            chunks.append(payload)
        data = b"".join(chunks)
        written = os.write(self._fd, data)
        assert written == len(data), "short write to the WAL"
        self.records += len(payloads)
        self._sync()

    def _sync(self) -> None:
        now = time.monotonic()
        if self.fsync == "batch" or (self.fsync == "interval" and now - self._last_sync >= FSYNC_INTERVAL_S):
            os.fsync(self._fd)
            self._last_sync = now

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def recover(path: Path) -> Iterator[bytes]:
    """Yield every good record; truncate the file at the first torn or corrupt one."""
    if not path.exists():
        return
    good_end = 0
    with open(path, "rb") as file:
        while True:
            header = file.read(HEADER.size)
            if not header:
                break
            if len(header) < HEADER.size:
                log.warning("torn WAL header", extra={"offset": good_end})
                break
            length, crc = HEADER.unpack(header)
            payload = file.read(length) if length <= MAX_RECORD_BYTES else b""
            if length > MAX_RECORD_BYTES or len(payload) < length or zlib.crc32(payload) != crc:
                log.warning("corrupt or torn WAL record", extra={"offset": good_end, "length": length})
                break
            good_end = file.tell()
            yield payload
    if path.stat().st_size > good_end:
        log.warning("truncating WAL tail", extra={"from_bytes": path.stat().st_size, "to_bytes": good_end})
        with open(path, "r+b") as file:
            file.truncate(good_end)
            os.fsync(file.fileno())
