"""A WAL split into segments so it does not grow for ever.

Segment files are `wal-<first record index:020d>.log` in one directory; record indexes are
global and 1-based (the n-th input ever logged has index n). After a snapshot at position
P (P records applied), `rotate(P)` starts a new segment at P and `prune(oldest kept
snapshot position)` deletes the segments entirely below it. Recovery walks the segments in
order; a segment that does not start where the previous one ended, or a corrupt record,
ends the log there (later segments are removed): the inputs after that point are consumed
again from Kafka, since the source offsets come from the records replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from perpline.matcher import wal

log = logging.getLogger("perpline.matcher.wal")

PREFIX = "wal-"


def _name(start: int) -> str:
    return f"{PREFIX}{start:020d}.log"


def segments(directory: Path) -> list[tuple[int, Path]]:
    if not directory.exists():
        return []
    return sorted((int(p.stem[len(PREFIX):]), p) for p in directory.glob(f"{PREFIX}*.log"))


class SegmentedWal:
    def __init__(self, directory: Path, fsync: str) -> None:
        self.directory = directory
        self.fsync = fsync
        self.records = 0  # global index of the last record written
        self._current: wal.Wal | None = None
        self._tail_checked = False

    def recover(self) -> Iterator[tuple[int, bytes]]:
        """Yield (global index, payload) of every good record, cutting the log at the first break."""
        expected = None
        found = segments(self.directory)
        for position, (start, path) in enumerate(found):
            if expected is not None and start != expected:
                log.error("WAL segment gap: cutting the log", extra={"expected": expected, "segment": path.name})
                self._remove(found[position:])
                break
            index = start
            for payload in wal.recover(path):
                index += 1
                yield index, payload
            expected = index
            self.records = index
        self._tail_checked = True  # every segment was read to its end and its tail cut: open() need not again

    def open(self) -> None:
        """Append to the newest segment (or a new one at the current position)."""
        found = segments(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = found[-1][1] if found else self.directory / _name(self.records)
        self._current = wal.Wal(path, fsync=self.fsync, verify_tail=not self._tail_checked)

    def append_batch(self, payloads: list[bytes]) -> None:
        assert self._current is not None, "open() first"
        self._current.append_batch(payloads)
        self.records += len(payloads)

    def rotate(self) -> None:
        """Start a new segment at the current position (call right after a snapshot)."""
        assert self._current is not None
        self._current.close()
        self._current = wal.Wal(self.directory / _name(self.records), fsync=self.fsync)

    def prune(self, keep_from: int) -> None:
        """Delete segments whose records are all at or below `keep_from` (covered by a kept snapshot)."""
        found = segments(self.directory)
        for (_, path), (next_start, _) in zip(found, found[1:], strict=False):
            if next_start <= keep_from:
                path.unlink()

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None

    @staticmethod
    def _remove(items: list[tuple[int, Path]]) -> None:
        for _, path in items:
            path.unlink()
