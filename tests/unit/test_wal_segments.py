"""The segmented WAL: global indexes across segments, rotation, pruning, and cutting at a break."""

from __future__ import annotations

from pathlib import Path

from perpline.matcher.segments import SegmentedWal, segments


def write(directory: Path, batches: list[list[bytes]], rotate_after: set[int]) -> SegmentedWal:
    log = SegmentedWal(directory, "never")
    list(log.recover())
    log.open()
    for n, batch in enumerate(batches):
        log.append_batch(batch)
        if n in rotate_after:
            log.rotate()
    log.close()
    return log


def test_indexes_continue_across_segments_and_reopen(tmp_path: Path) -> None:
    write(tmp_path, [[b"a", b"b"], [b"c"], [b"d", b"e"]], rotate_after={0, 1})
    assert [start for start, _ in segments(tmp_path)] == [0, 2, 3]
    again = SegmentedWal(tmp_path, "never")
    assert list(again.recover()) == [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d"), (5, b"e")]
    again.open()
    again.append_batch([b"f"])
    again.close()
    assert list(SegmentedWal(tmp_path, "never").recover())[-1] == (6, b"f")


def test_prune_keeps_what_the_oldest_snapshot_needs(tmp_path: Path) -> None:
    log = write(tmp_path, [[b"a", b"b"], [b"c"], [b"d"]], rotate_after={0, 1})
    log.prune(keep_from=2)  # a snapshot at 2 needs records 3 and later
    assert [start for start, _ in segments(tmp_path)] == [2, 3]
    assert [i for i, _ in SegmentedWal(tmp_path, "never").recover()] == [3, 4]


def test_a_missing_segment_cuts_the_log_there(tmp_path: Path) -> None:
    write(tmp_path, [[b"a"], [b"b"], [b"c"]], rotate_after={0, 1})
    (tmp_path / "wal-00000000000000000001.log").unlink()
    assert list(SegmentedWal(tmp_path, "never").recover()) == [(1, b"a")]
    assert [start for start, _ in segments(tmp_path)] == [0]
