"""The matcher process on the real broker: SIGKILL after a snapshot, restart, and the event stream
is exactly what a straight replay of the same inputs produces (re-emitted events are identical
duplicates that consumers drop by seq)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from conftest_broker import PY, at_least, kill, read_all, running_broker

from perpline import REPO_ROOT
from perpline.config import producer_config
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.matcher import convert
from perpline.matcher.loader import load_core
from perpline.matcher.segments import segments

pytestmark = pytest.mark.integration
SYMBOL = "BTCUSDT-PERP"
INPUTS = 6000


def workload(seed: int) -> list[m.Msg]:
    rng = random.Random(seed)
    out: list[m.Msg] = []
    live: list[tuple[int, int]] = []
    for n in range(1, INPUTS + 1):
        meta = {"trace_id": f"t{n}", "causation_id": f"c{n}", "ts_ms": 1_700_000_000_000 + n}
        if live and rng.random() < 0.15:
            order_id, account = live.pop(rng.randrange(len(live)))
            out.append(m.CancelRequest(**meta, order_id=order_id, account_id=account, symbol=SYMBOL))
            continue
        account = rng.randint(1, 6)
        order_id = (account << 32) | n
        side = rng.choice(["BUY", "SELL"])
        price = 500_000 + rng.randint(-30, 30) + (5 if side == "BUY" else -5)
        out.append(m.NewOrder(**meta, order_id=order_id, account_id=account, symbol=SYMBOL, side=side,
                              order_type="LIMIT", time_in_force=rng.choice(["GTC", "GTC", "IOC"]),
                              price=f"{price // 10}.{price % 10}0", quantity=f"0.{rng.randint(1, 50):03d}",
                              client_order_id=f"c{n}"))
        live.append((order_id, account))
    return out


def expected_events(inputs: list[m.Msg]) -> list[bytes]:
    core = load_core(pure=False)
    engine = core.Engine(SYMBOL, core.EngineConfig())
    return [codec.encode(ev) for cmd in inputs for ev in convert.apply(engine, core, cmd)]


def final_events(bootstrap: str, tmp_path: Path, expected: list[bytes], extra: dict[str, str] | None = None) -> list:
    """Start the matcher once more and read matcher.events until every expected event is there."""
    matcher = start_matcher(bootstrap, tmp_path, extra)
    try:
        return read_all(bootstrap, "matcher.events", 2, timeout_s=120, done=at_least(len(expected)), settle_s=2.0)
    finally:
        kill(matcher)


def dedupe(records: list, expected: list[bytes]) -> tuple[list[bytes], int]:
    """The stream by seq (re-emitted copies must be identical), and how many copies were dropped."""
    by_seq: dict[int, bytes] = {}
    duplicates = 0
    for _, value, _, _ in records:
        encoded = codec.encode(codec.from_builtins("matcher.events", value))
        if value["seq"] in by_seq:
            duplicates += 1
            assert by_seq[value["seq"]] == encoded, f"a re-emitted event differs at seq {value['seq']}"
        by_seq[value["seq"]] = encoded
    assert sorted(by_seq) == list(range(1, len(expected) + 1)), "seq must be gap-free with no extra events"
    return [by_seq[s] for s in sorted(by_seq)], duplicates


def start_matcher(bootstrap: str, data_dir: Path, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PERPLINE_KAFKA_BOOTSTRAP": bootstrap, "PERPLINE_MATCHER_SNAPSHOT_EVERY": "1000",
           **(extra or {})}
    log = open(data_dir.parent / f"{data_dir.name}.log", "ab")  # noqa: SIM115 (kept open by the child)
    return subprocess.Popen([PY, "-m", "perpline.matcher.runner", "--data-dir", str(data_dir)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=log)


def test_kill_after_snapshot_then_recover_gives_the_straight_replay(tmp_path: Path) -> None:
    inputs = workload(11)
    expected = expected_events(inputs)
    with running_broker() as broker:
        producer = Producer(producer_config(broker.bootstrap))
        for cmd in inputs:
            producer.produce("orders", key=SYMBOL.encode(), value=codec.encode(cmd))
        assert producer.flush(30) == 0
        matcher = start_matcher(broker.bootstrap, tmp_path)
        deadline = time.monotonic() + 60
        while not list((tmp_path / "snapshots").glob("snapshot-*.bin")) and time.monotonic() < deadline:
            time.sleep(0.01)
        matcher.send_signal(signal.SIGKILL)
        matcher.wait(10)
        assert list((tmp_path / "snapshots").glob("snapshot-*.bin")), "the matcher wrote no snapshot"
        records = final_events(broker.bootstrap, tmp_path, expected)
    got, _ = dedupe(records, expected)
    assert got == expected


def test_twenty_random_kills_under_steady_flow(tmp_path: Path) -> None:
    """kill -9 at random moments while orders keep arriving; the de-duplicated stream equals an
    uninterrupted run: no gap, no duplicate trade, identical events."""
    inputs = workload(23)
    expected = expected_events(inputs)
    rng = random.Random(5)
    with running_broker() as broker:
        producer = Producer(producer_config(broker.bootstrap))
        feeder_done = threading.Event()

        def feed() -> None:
            for start in range(0, len(inputs), 150):
                for cmd in inputs[start:start + 150]:
                    producer.produce("orders", key=SYMBOL.encode(), value=codec.encode(cmd))
                producer.flush(10)
                time.sleep(0.8)  # about 35 s of steady flow: the kills (20 x 1-3 s) land while orders arrive
            feeder_done.set()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        env_every = {"PERPLINE_MATCHER_SNAPSHOT_EVERY": "310"}  # not a divisor of the inputs: a tail stays
        for _ in range(20):
            matcher = start_matcher(broker.bootstrap, tmp_path, env_every)
            time.sleep(rng.uniform(0.3, 1.5))
            matcher.send_signal(signal.SIGKILL)
            matcher.wait(10)
        feeder_done.wait(60)
        records = final_events(broker.bootstrap, tmp_path, expected, env_every)
    stream, duplicates = dedupe(records, expected)
    assert stream == expected
    trades = [v for v in stream if b'"type":"trade"' in v]
    assert len({t for t in trades}) == len(trades), "no trade twice in the de-duplicated stream"
    lines = (tmp_path.parent / f"{tmp_path.name}.log").read_text().splitlines()
    recoveries = [r for r in (json.loads(line) for line in lines if '"recovered"' in line) if r.get("msg") == "recovered"]
    replayed = [r["replayed_inputs"] for r in recoveries]
    print(f"MATCHER_KILLS 20 events={len(expected)} re-emitted={duplicates} replayed_per_restart={replayed}")
    assert len(segments(tmp_path / "wal")) <= 5, "WAL segments covered by snapshots are pruned"
    assert len(recoveries) >= 15 and sum(1 for n in replayed if n > 0) >= 5, "kills must land mid-stream"
