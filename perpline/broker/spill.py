"""A partition's oldest record batches on disk: what keeps the embedded broker's memory flat.

The embedded stack deletes nothing from its event logs (account.commands, orders, matcher.events,
account.events, ledger.entries, positions): readers replay them from the start. Held in memory, they
grew the broker by about 18 MB a minute under the demo traders (bench.soak). Once a partition of a
deleting topic holds more than its spill threshold in memory, the housekeeping tick appends its oldest
batches to the partition's file and keeps only their positions (8 bytes each, `positions`); a fetch of
them reads each contiguous run with one pread. The newest batches, which consumers at the tail fetch,
stay in memory. Compacted topics never spill (compaction rewrites their batches in place).

The files are the broker's memory on disk, not storage: they are created empty when the broker
starts and live as long as its process (a restarted embedded broker starts empty, and the stack
stops: docs/broker-notes.md).
"""

from __future__ import annotations

import os
from array import array
from pathlib import Path


class SpillFile:
    """The spilled batches of one partition, oldest first, appended to one file."""

    __slots__ = ("bytes", "fd", "path", "positions")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.positions = array("q", [0])  # file position of each spilled batch still held, then the end
        self.bytes = 0  # bytes of the spilled batches still held

    def __len__(self) -> int:
        return len(self.positions) - 1

    def append(self, batches: list[bytes]) -> None:
        data = b"".join(batches)
        end = self.positions[-1]
        written = os.pwrite(self.fd, data, end)
        assert written == len(data), "short write to a spill file"
        for batch in batches:
            end += len(batch)
            self.positions.append(end)
        self.bytes += len(data)

    def size(self, index: int) -> int:
        return self.positions[index + 1] - self.positions[index]

    def read(self, first: int, last: int) -> bytes:
        """Batches [first, last) as stored, in one read."""
        start = self.positions[first]
        data = os.pread(self.fd, self.positions[last] - start, start)
        assert len(data) == self.positions[last] - start, "short read from a spill file"
        return data

    def drop(self, count: int) -> int:
        """Forget the `count` oldest batches; returns their bytes. The file shrinks once all are gone."""
        count = min(count, len(self))
        freed = self.positions[count] - self.positions[0]
        if count == len(self):
            os.ftruncate(self.fd, 0)
            self.positions = array("q", [0])
        else:
            del self.positions[:count]
        self.bytes -= freed
        return freed

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)
