"""WAL: round trip, group commit, fsync policies, and recovery from torn and corrupt data."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from perpline.matcher import wal

RECORDS = [b"first", b"second record", b"x" * 1000, b'{"p":0,"o":3}\n{"k":"v"}']


def _write(path: Path, records: list[bytes], fsync: str = "batch") -> list[int]:
    """Write one record per batch; returns each record's end offset."""
    ends = []
    with wal.Wal(path, fsync=fsync) as log:
        for record in records:
            log.append(record)
            ends.append(log.size_bytes)
    return ends


def test_round_trip_and_group_commit(tmp_path: Path) -> None:
    path = tmp_path / "m.wal"
    with wal.Wal(path) as log:
        log.append_batch(RECORDS[:2])
        log.append_batch([])
        log.append(RECORDS[2])
        log.append_batch(RECORDS[3:])
        assert log.records == 4
    assert list(wal.recover(path)) == RECORDS
    assert path.stat().st_size == sum(8 + len(r) for r in RECORDS)


def test_reopen_appends_after_existing_records(tmp_path: Path) -> None:
    path = tmp_path / "m.wal"
    _write(path, RECORDS[:2])
    _write(path, RECORDS[2:])
    assert list(wal.recover(path)) == RECORDS


@pytest.mark.parametrize("policy", ["batch", "interval", "never", wal.FsyncPolicy.INTERVAL])
def test_every_fsync_policy_persists_on_close(tmp_path: Path, policy: str) -> None:
    path = tmp_path / "m.wal"
    log = wal.Wal(path, fsync=policy, interval_ms=0)
    log.append_batch(RECORDS)
    log.flush()
    log.close()
    log.close()  # idempotent
    assert list(wal.recover(path)) == RECORDS


def test_bad_policy_and_bad_records_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        wal.Wal(tmp_path / "a.wal", fsync="sometimes")
    with wal.Wal(tmp_path / "b.wal") as log, pytest.raises(AssertionError):
        log.append(b"")
    with wal.Wal(tmp_path / "c.wal") as log, pytest.raises(AssertionError):
        log.append(b"x" * (wal.MAX_RECORD_BYTES + 1))


def test_missing_file_recovers_nothing(tmp_path: Path) -> None:
    assert list(wal.recover(tmp_path / "none.wal")) == []


@pytest.mark.parametrize("cut", [1, 4, 7, 8, 9])
def test_torn_tail_is_truncated(tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "m.wal"
    ends = _write(path, RECORDS)
    with open(path, "r+b") as file:
        file.truncate(ends[2] + cut)  # inside the last record's header or payload
    with caplog.at_level(logging.WARNING, logger="perpline.matcher.wal"):
        assert list(wal.recover(path)) == RECORDS[:3]
    assert path.stat().st_size == ends[2]
    assert any("truncating" in r.getMessage() for r in caplog.records)
    _write(path, [b"after"])  # appends go after the good records
    assert list(wal.recover(path)) == RECORDS[:3] + [b"after"]


def test_flipped_byte_in_last_record(tmp_path: Path) -> None:
    path = tmp_path / "m.wal"
    ends = _write(path, RECORDS)
    raw = bytearray(path.read_bytes())
    raw[ends[3] - 2] ^= 0x40
    path.write_bytes(bytes(raw))
    assert list(wal.recover(path)) == RECORDS[:3]
    assert path.stat().st_size == ends[2]


def test_flipped_crc_byte(tmp_path: Path) -> None:
    path = tmp_path / "m.wal"
    ends = _write(path, RECORDS)
    raw = bytearray(path.read_bytes())
    raw[ends[2] + 5] ^= 0x01  # the crc of the last record
    path.write_bytes(bytes(raw))
    assert list(wal.recover(path)) == RECORDS[:3]


def test_corrupt_record_in_the_middle_ends_the_log_there(tmp_path: Path) -> None:
    """Documented choice: the records after a corrupt one are cut, never skipped over."""
    path = tmp_path / "m.wal"
    ends = _write(path, RECORDS)
    raw = bytearray(path.read_bytes())
    raw[ends[0] + 8] ^= 0xFF  # first payload byte of record 2
    path.write_bytes(bytes(raw))
    assert list(wal.recover(path)) == RECORDS[:1]
    assert path.stat().st_size == ends[0]


def test_huge_length_and_zero_filled_tail(tmp_path: Path) -> None:
    path = tmp_path / "m.wal"
    ends = _write(path, RECORDS[:2])
    with open(path, "ab") as file:
        file.write(b"\x00" * 4096)  # what a crash can leave on some file systems
    assert list(wal.recover(path)) == RECORDS[:2]
    assert path.stat().st_size == ends[1]
    with open(path, "ab") as file:
        file.write(b"\xff\xff\xff\xff" + b"\x00" * 20)  # length 4 GiB
    assert list(wal.recover(path)) == RECORDS[:2]
    assert path.stat().st_size == ends[1]


def test_opening_truncates_a_bad_tail_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "m.wal"
    ends = _write(path, RECORDS)
    with open(path, "r+b") as file:
        file.truncate(ends[3] - 3)
    _write(path, [b"next"])  # without the check this record would sit behind garbage
    assert list(wal.recover(path)) == RECORDS[:3] + [b"next"]


def test_partial_iteration_does_not_truncate(tmp_path: Path) -> None:
    path = tmp_path / "m.wal"
    _write(path, RECORDS)
    size = path.stat().st_size
    records = wal.recover(path)
    assert next(records) == RECORDS[0]
    del records
    assert path.stat().st_size == size
