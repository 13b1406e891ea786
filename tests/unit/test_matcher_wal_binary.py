"""The matcher's binary WAL records (perpline.matcher.walrec): recovery from them restores the same books
and re-emits the same events as recovery from the version-1 JSON records, which are still read."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from perpline.config import topic_map
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.matcher import convert, walrec
from perpline.matcher.loader import load_core
from perpline.matcher.runner import Matcher, wal_record
from perpline.matcher.segments import SegmentedWal, segments

SYMBOLS = ("BTCUSDT-PERP", "ETHUSDT-PERP")


def workload(seed: int, count: int) -> list[bytes]:
    """Orders on two symbols crossing each other, cancels, amends (with causes, so they have an identity),
    copies of an amend, malformed inputs, a price off the grid and an order id past a signed 64-bit integer."""
    rng = random.Random(seed)
    out: list[bytes] = []
    live: list[tuple[int, int, str]] = []
    for n in range(1, count + 1):
        meta = {"trace_id": f"trace-{n}-é", "causation_id": f"req-{n}", "ts_ms": 1_700_000_000_000 + n}
        roll = rng.random()
        if roll < 0.02:
            out.append(b'{"type": "new_order", "broken"')
            continue
        if live and roll < 0.2:
            order_id, account, symbol = live.pop(rng.randrange(len(live)))
            out.append(codec.encode(m.CancelRequest(**meta, order_id=order_id, account_id=account, symbol=symbol)))
            continue
        if live and roll < 0.3:
            order_id, account, symbol = rng.choice(live)
            amend = codec.encode(m.AmendRequest(**meta, order_id=order_id, account_id=account, symbol=symbol,
                                                price=f"{rng.randint(2990, 3010)}.00", quantity="0.020"))
            out.extend([amend, amend] if roll < 0.22 else [amend])  # a copy applies once
            continue
        account, symbol = rng.randint(1, 4), rng.choice(SYMBOLS)
        order_id = (1 << 63) + n if roll < 0.31 else (account << 32) | n
        price = f"{rng.randint(2990, 3010)}.{'05' if roll < 0.32 else '00'}"
        out.append(codec.encode(m.NewOrder(**meta, order_id=order_id, account_id=account, symbol=symbol,
                                           side=rng.choice(["BUY", "SELL"]), order_type="LIMIT",
                                           time_in_force=rng.choice(["GTC", "GTC", "IOC"]), price=price,
                                           quantity=f"0.{rng.randint(1, 40):03d}", client_order_id=f"c{n}")))
        live.append((order_id, account, symbol))
    return out


def write_wal(directory: Path, inputs: list[bytes], binary: bool, per_record: int = 50) -> None:
    """The WAL the runner writes: binary, one record per consumed batch (Matcher._encode, as _process
    does); or version 1, one record per input (what the runner wrote before)."""
    encoder = Matcher(directory, "127.0.0.1:1", topic_map(), "never")
    wal = SegmentedWal(directory / "wal", "never")
    wal.open()
    for start in range(0, len(inputs), per_record):
        chunk = [(0, n, inputs[n]) for n in range(start, min(start + per_record, len(inputs)))]
        wal.append_batch([encoder._encode(chunk)[0]] if binary else [wal_record(*row) for row in chunk])
    wal.close()


def recovered(directory: Path) -> tuple[Matcher, dict[str, list[bytes]]]:
    """The recovered matcher and the events it re-emits per symbol (symbols are independent: within a
    batch the runner applies one symbol after the other)."""
    matcher = Matcher(directory, "127.0.0.1:1", topic_map(), "never")
    replayed = matcher.recover()
    matcher.wal.close()
    out: dict[str, list[bytes]] = {}
    for symbol, events in replayed:
        out.setdefault(symbol, []).extend(codec.encode(event) for event in events)
    return matcher, out


def hashes(matcher: Matcher) -> dict[str, str]:
    return {symbol: engine.state_hash() for symbol, engine in matcher.state.engines.items()}


def straight(inputs: list[bytes]) -> dict[str, list[bytes]]:
    """Every valid input applied one by one, no WAL: what the matcher emits without a crash, per symbol."""
    core = load_core()
    engines: dict[str, object] = {}
    out: dict[str, list[bytes]] = {}
    for raw in inputs:
        try:
            cmd = codec.decode("orders", raw)
            engine = engines.setdefault(cmd.symbol, core.Engine(cmd.symbol, core.EngineConfig()))
            out.setdefault(cmd.symbol, []).extend(codec.encode(event) for event in convert.apply(engine, core, cmd))
        except Exception:  # noqa: BLE001, S112 (malformed or off the grid: a dead letter, no event)
            continue
    return out


@pytest.mark.parametrize("pure", [False, True])
def test_a_binary_wal_recovers_the_same_books_and_re_emits_the_same_events_as_the_json_wal(
        tmp_path: Path, pure: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if pure:
        monkeypatch.setenv("PERPLINE_MATCHER_PURE", "1")
    inputs = workload(3, 1500)
    write_wal(tmp_path / "json", inputs, binary=False)
    write_wal(tmp_path / "binary", inputs, binary=True)
    from_json, json_events = recovered(tmp_path / "json")
    from_binary, binary_events = recovered(tmp_path / "binary")
    assert set(from_binary.state.engines) == set(SYMBOLS)
    assert hashes(from_binary) == hashes(from_json)
    assert binary_events == json_events == straight(inputs)
    assert from_binary.state.next_offsets == from_json.state.next_offsets == {0: len(inputs)}
    assert from_binary.state.inputs_since_snapshot == len(inputs)
    assert len(segments(tmp_path / "binary" / "wal")) == 1
    assert sum(1 for _ in SegmentedWal(tmp_path / "binary" / "wal", "never").recover()) == 1500 // 50 + 1


def test_an_old_json_wal_continued_in_binary_after_a_snapshot_recovers_to_the_straight_run(tmp_path: Path) -> None:
    """An upgrade: the old matcher wrote version-1 records, the new one snapshots and appends binary records."""
    inputs = workload(5, 900)[:900]
    write_wal(tmp_path, inputs[:400], binary=False)
    upgraded = Matcher(tmp_path, "127.0.0.1:1", topic_map(), "never")
    upgraded.recover()
    upgraded.take_snapshot()
    for start in (400, 650):
        record, _ = upgraded._encode([(0, n, inputs[n]) for n in range(start, start + 250)])
        upgraded.wal.append_batch([record])
        upgraded._apply_records([record])
    upgraded.wal.close()
    again, events = recovered(tmp_path)
    assert hashes(again) == hashes(upgraded)
    expected = straight(inputs)
    for symbol, tail in events.items():  # only the events of the tail after the snapshot
        assert tail and tail == expected[symbol][-len(tail):]
    assert sum(map(len, events.values())) < sum(map(len, expected.values()))
    assert again.state.next_offsets == {0: 900}


def test_a_torn_binary_record_drops_its_whole_batch_and_consumption_resumes_at_its_first_input(
        tmp_path: Path) -> None:
    inputs = workload(7, 300)[:300]
    write_wal(tmp_path / "whole", inputs[:200], binary=True, per_record=100)
    write_wal(tmp_path / "torn", inputs, binary=True, per_record=100)
    (path,) = [p for _, p in segments(tmp_path / "torn" / "wal")]
    path.write_bytes(path.read_bytes()[:-7])
    torn, events = recovered(tmp_path / "torn")
    whole, expected = recovered(tmp_path / "whole")
    assert torn.state.next_offsets == {0: 200} and hashes(torn) == hashes(whole) and events == expected


def test_the_runner_logs_one_binary_record_per_batch_with_dead_letters_as_skipped_rows(tmp_path: Path) -> None:
    matcher = Matcher(tmp_path, "127.0.0.1:1", topic_map(), "never")
    matcher.recover()
    inputs = workload(9, 60) + [b"not json"]
    record, letters = matcher._encode([(1, 100 + n, raw) for n, raw in enumerate(inputs)])
    assert walrec.is_binary(record) and walrec.rows(record) == len(inputs)
    assert [pos for _, pos, _ in letters][-1] == {"p": 1, "o": 100 + len(inputs) - 1}
    decoded = walrec.decode(record)
    assert list(decoded.offsets) == [100 + n for n in range(len(inputs))]
    assert sum(len(part.trace_ids) for part in decoded.parts) == len(inputs) - len(letters)
    assert b"BTCUSDT-PERP" in record and b'"new_order"' not in record  # the inputs' fields, not their JSON


def test_the_cause_kinds_are_the_cores_commands() -> None:
    core = load_core()
    assert convert.CAUSE_NAMES == {core.CMD_PLACE: "order", core.CMD_CANCEL: "cancel", core.CMD_AMEND: "amend"}
