"""Snapshot files: atomic write, names carry the WAL position, keep K, corrupt newest falls back."""

from __future__ import annotations

from pathlib import Path

import pytest

from perpline.matcher import snapshot
from perpline.matcher.loader import load_core


def test_write_and_load_latest(tmp_path: Path) -> None:
    snapshot.write(tmp_path, 10, b"ten")
    path = snapshot.write(tmp_path, 250, b"two hundred fifty")
    assert path.name == "snapshot-00000000000000000250.bin"
    loaded = snapshot.load_latest(tmp_path)
    assert loaded is not None and (loaded.position, loaded.data, loaded.path) == (250, b"two hundred fifty", path)
    assert not list(tmp_path.glob("*.tmp"))


def test_empty_or_missing_dir(tmp_path: Path) -> None:
    assert snapshot.load_latest(tmp_path / "missing") is None
    assert snapshot.load_latest(tmp_path) is None


def test_keeps_the_newest_k_by_position(tmp_path: Path) -> None:
    for position in (5, 100, 20, 9_999, 300):
        snapshot.write(tmp_path, position, b"x%d" % position, keep=3)
    assert [p.name for p in snapshot.list_snapshots(tmp_path)] == [snapshot.file_name(n) for n in (100, 300, 9_999)]


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "rename"])
def test_corrupt_newest_falls_back_to_previous(tmp_path: Path, damage: str) -> None:
    snapshot.write(tmp_path, 1, b"older state")
    newest = snapshot.write(tmp_path, 2, b"newer state")
    raw = bytearray(newest.read_bytes())
    if damage == "flip":
        raw[-1] ^= 0x01
        newest.write_bytes(bytes(raw))
    elif damage == "truncate":
        newest.write_bytes(bytes(raw[:-4]))
    elif damage == "empty":
        newest.write_bytes(b"")
    else:  # a valid file under another position's name
        newest.rename(tmp_path / snapshot.file_name(3))
    loaded = snapshot.load_latest(tmp_path)
    assert loaded is not None and (loaded.position, loaded.data) == (1, b"older state")


def test_all_corrupt_gives_none(tmp_path: Path) -> None:
    path = snapshot.write(tmp_path, 7, b"state")
    path.write_bytes(b"PLSN" + b"\x00" * 40)
    assert snapshot.load_latest(tmp_path) is None


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".snapshot-00000000000000000009.bin.123.tmp").write_bytes(b"half written")
    snapshot.write(tmp_path, 10, b"s")
    assert not list(tmp_path.glob("*.tmp"))
    assert snapshot.load_latest(tmp_path) is not None


def test_engine_snapshot_through_files_keeps_state_hash(tmp_path: Path) -> None:
    core = load_core(pure=True)
    engine = core.Engine("ETHUSDT", core.EngineConfig())
    engine.place(1, 1, core.SIDE_SELL, core.TYPE_LIMIT, core.TIF_GTC, 2000, 5, core.STP_DEFAULT, False, "a", 1)
    engine.place(2, 2, core.SIDE_BUY, core.TYPE_LIMIT, core.TIF_GTC, 2001, 2, core.STP_DEFAULT, False, "", 2)
    snapshot.write(tmp_path, 2, engine.to_snapshot())
    loaded = snapshot.load_latest(tmp_path)
    assert loaded is not None
    assert core.Engine.from_snapshot(loaded.data).state_hash() == engine.state_hash()
