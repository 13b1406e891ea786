"""Snapshots: written atomically (temp file, fsync, rename, fsync dir), verified on load, last K kept.

File: `snapshot-<position:020d>.bin` = u32 crc32 | u64 position | data. A snapshot that
does not verify is skipped: recovery falls back to the previous one and a longer WAL tail.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("perpline.matcher.snapshot")

HEADER = struct.Struct("<IQ")
PREFIX = "snapshot-"


@dataclass(frozen=True)
class Snapshot:
    position: int
    data: bytes
    path: Path


def write(directory: Path, position: int, data: bytes, keep: int = 3) -> Path:
    assert keep >= 1 and position >= 0
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{position:020d}.bin"
    temp = directory / f".{final.name}.tmp"
    with open(temp, "wb") as file:
        file.write(HEADER.pack(zlib.crc32(data), position))
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, final)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in sorted(directory.glob(f"{PREFIX}*.bin"))[:-keep]:
        old.unlink()
    return final


def _read(path: Path) -> Snapshot | None:
    raw = path.read_bytes()
    if len(raw) < HEADER.size:
        return None
    crc, position = HEADER.unpack(raw[:HEADER.size])
    data = raw[HEADER.size:]
    if zlib.crc32(data) != crc:
        return None
    return Snapshot(position, data, path)


def load_latest(directory: Path) -> Snapshot | None:
    """The newest snapshot that verifies, or None."""
    if not directory.exists():
        return None
    for path in sorted(directory.glob(f"{PREFIX}*.bin"), reverse=True):
        found = _read(path)
        if found is not None:
            return found
        log.warning("corrupt snapshot skipped", extra={"path": str(path)})
    return None
