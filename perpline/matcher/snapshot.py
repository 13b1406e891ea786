"""Snapshots: written atomically, verified on load, the newest K kept.

File `snapshot-<position:020d>.bin`, position = the last applied WAL position (the runner
uses the count of WAL records applied). Content:
    magic b"PLSN" | u32 crc32 | u64 position | u64 data_len | data
crc32 covers position, data_len and data. Write: temp file in the same directory, fsync,
rename over the final name, fsync the directory; then older snapshots beyond `keep` and
stale temp files are removed. `load_latest(dir)` returns the newest snapshot that verifies
(magic, length, crc, position equal to the one in its name); a corrupt newest is logged
and skipped, so recovery falls back to the previous one and a longer WAL tail.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("perpline.matcher.snapshot")

MAGIC = b"PLSN"
HEADER = struct.Struct("<4sIQQ")
BODY_FIELDS = struct.Struct("<QQ")
PREFIX = "snapshot-"
SUFFIX = ".bin"
MAX_KEEP = 100
MAX_POSITION = (1 << 63) - 1


@dataclass(frozen=True)
class Snapshot:
    position: int
    data: bytes
    path: Path


def file_name(position: int) -> str:
    return f"{PREFIX}{position:020d}{SUFFIX}"


def _crc(position: int, data: bytes) -> int:
    return zlib.crc32(data, zlib.crc32(BODY_FIELDS.pack(position, len(data))))


def write(directory: Path, position: int, data: bytes, keep: int = 3) -> Path:
    """Write atomically; returns the final path. Keeps the `keep` newest snapshots."""
    assert 1 <= keep <= MAX_KEEP and 0 <= position <= MAX_POSITION
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / file_name(position)
    temp = directory / f".{final.name}.{os.getpid()}.tmp"
    with open(temp, "wb") as file:
        file.write(HEADER.pack(MAGIC, _crc(position, data), position, len(data)))
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, final)
    _fsync_dir(directory)
    _prune(directory, keep)
    return final


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _prune(directory: Path, keep: int) -> None:
    for old in list_snapshots(directory)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in directory.glob(f".{PREFIX}*.tmp"):
        stale.unlink(missing_ok=True)  # a temp file left by a crash mid-write


def _position_of(path: Path) -> int | None:
    digits = path.name[len(PREFIX):-len(SUFFIX)]
    return int(digits) if len(digits) == 20 and digits.isdigit() else None


def list_snapshots(directory: Path) -> list[Path]:
    """Snapshot files, oldest position first (not verified)."""
    if not directory.exists():
        return []
    found = [p for p in directory.glob(f"{PREFIX}*{SUFFIX}") if _position_of(p) is not None]
    return sorted(found, key=lambda p: _position_of(p) or 0)


def read(path: Path) -> Snapshot | None:
    """The snapshot in `path` if it verifies, else None."""
    raw = path.read_bytes()
    if len(raw) < HEADER.size:
        return None
    magic, crc, position, data_len = HEADER.unpack_from(raw, 0)
    data = raw[HEADER.size:]
    if magic != MAGIC or data_len != len(data) or position != _position_of(path):
        return None
    if _crc(position, data) != crc:
        return None
    return Snapshot(position, data, path)


def load_latest(directory: Path) -> Snapshot | None:
    """The newest snapshot that verifies, or None."""
    for path in reversed(list_snapshots(directory)):
        found = read(path)
        if found is not None:
            return found
        log.warning("corrupt snapshot skipped; falling back to an older one", extra={"path": str(path)})
    return None
