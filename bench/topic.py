"""Topic-to-topic benchmark: the matcher process on the embedded broker, next to the broker's own ceiling.

    python -m bench.topic [--inputs 100000] [--shards 1] [--symbols N]

1. Start the embedded broker; preload `orders` with the bench.matcher flow (contract messages).
2. Ceiling, measured in the same run: one consumer reads those inputs and one producer (the
   runner's producer settings: acks=all, idempotent) writes each to a scratch topic; msgs/s.
3. The matcher (`perpline.matcher.runner`, WAL fsync per batch unless --fsync says otherwise)
   starts on the preloaded topic; from the moment it reports ready until `matcher.events` holds
   every event a straight run of the engine produces: inputs/s topic to topic.

--shards N runs N matcher processes (shard I owns the `orders` partitions p % N == I) and reports the
aggregate from the moment all are ready. The inputs are split over --symbols symbols (default: one
per shard, each keyed to a partition of its own, checked at preload; each symbol its own seeded flow),
so `--shards 1 --symbols 2` is the same load on one process. `--shards 1` alone is the one-symbol
BTCUSDT-PERP flow of earlier rounds.
Prints one JSON object; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.matcher import FLOW_SEED, encoded_inputs, flow
from perpline import REPO_ROOT
from perpline.config import producer_config
from perpline.contracts import codec
from perpline.matcher import convert
from perpline.matcher.loader import load_core
from perpline.stack.supervisor import free_port

TIMEOUT_S = 600.0


def start_broker() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "perpline.broker.launch", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert b"broker_ready" in line, f"broker did not start: {line!r}"
    return proc, f"127.0.0.1:{port}"


SYMBOLS = ("BTCUSDT-PERP", "ETHUSDT-PERP")  # murmur2 keys them to `orders` partitions 0 and 1


def symbol_inputs(inputs: int, symbols: int) -> dict[str, list[bytes]]:
    """The bench.matcher flow per symbol: the first symbol's is the classic BTCUSDT-PERP flow."""
    assert 1 <= symbols <= len(SYMBOLS), f"at most {len(SYMBOLS)} symbols"
    out = {}
    for index, symbol in enumerate(SYMBOLS[:symbols]):
        payloads = encoded_inputs(flow(inputs // symbols, FLOW_SEED + index))
        out[symbol] = payloads if index == 0 else [relabel(raw, symbol) for raw in payloads]
    return out


def relabel(raw: bytes, symbol: str) -> bytes:
    return codec.encode(msgspec.structs.replace(codec.decode("orders", raw), symbol=symbol))


def preload(bootstrap: str, per_symbol: dict[str, list[bytes]]) -> None:
    """Produce every symbol's inputs keyed by symbol (as the accounts processor does); each symbol must land on
    a partition of its own, or the shards would not split the load."""
    partitions: dict[str, set[int]] = {s: set() for s in per_symbol}
    producer = Producer(producer_config(bootstrap, **{"batch.num.messages": 10000}))
    for symbol, payloads in per_symbol.items():
        def seen(err: Any, msg: Any, symbol: str = symbol) -> None:
            assert err is None, err
            partitions[symbol].add(msg.partition())
        for raw in payloads:
            producer.produce("orders", key=symbol.encode(), value=raw, on_delivery=seen)
            producer.poll(0)
    assert producer.flush(60) == 0
    used = [p for parts in partitions.values() for p in parts]
    assert len(used) == len(set(used)) == len(per_symbol), f"symbols share partitions: {partitions}"


def expected_event_count(payloads: list[bytes], symbol: str = "BTCUSDT-PERP") -> int:
    core = load_core()
    engine = core.Engine(symbol, core.EngineConfig())
    inputs = [codec.decode("orders", raw) for raw in payloads]
    return sum(len(events) for events in convert.apply_batch(engine, core, [(i, convert.to_command(core, i))
                                                                          for i in inputs]))


def count_until(bootstrap: str, topic: str, wanted: int, started: float) -> float:
    """Seconds from `started` until `topic` holds `wanted` records (all partitions, from the start)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}-{time.time_ns()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    parts = consumer.list_topics(topic, timeout=15).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    seen = 0
    try:
        while seen < wanted:
            assert time.monotonic() - started < TIMEOUT_S, f"{topic}: {seen} of {wanted} records"
            seen += sum(1 for msg in consumer.consume(10_000, timeout=0.2) if msg.error() is None)
        return time.monotonic() - started
    finally:
        consumer.close()


def ceiling(bootstrap: str, inputs: int) -> float:
    """The broker's own consume + produce rate for these messages, msgs/s."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("bench.echo", 1, 1)])["bench.echo"].result(15)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-ceiling", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    parts = consumer.list_topics("orders", timeout=15).topics["orders"].partitions
    consumer.assign([TopicPartition("orders", p, 0) for p in parts])
    producer = Producer(producer_config(bootstrap, **{"batch.num.messages": 10000}))
    started = time.monotonic()
    moved = 0
    while moved < inputs:
        assert time.monotonic() - started < TIMEOUT_S
        for msg in consumer.consume(1000, timeout=0.2):
            if msg.error() is None:
                producer.produce("bench.echo", key=msg.key(), value=msg.value())
                moved += 1
        producer.poll(0)
        producer.flush(30)
    elapsed = time.monotonic() - started
    consumer.close()
    return inputs / elapsed


def run_matcher(bootstrap: str, fsync: str, wanted_events: int, shards: int = 1) -> float:
    """Seconds from the moment every shard is ready until matcher.events holds `wanted_events`."""
    with tempfile.TemporaryDirectory(prefix="perpline-bench-") as tmp:
        readies = [Path(tmp) / f"ready-{i}" for i in range(shards)]
        procs = [start_shard(bootstrap, fsync, Path(tmp) / "m", ready, i, shards) for i, ready in enumerate(readies)]
        try:
            deadline = time.monotonic() + 60
            while not all(ready.exists() for ready in readies):
                assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, "matcher did not start"
                time.sleep(0.005)
            return count_until(bootstrap, "matcher.events", wanted_events, time.monotonic())
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)


def start_shard(bootstrap: str, fsync: str, data_dir: Path, ready: Path, shard: int, shards: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PERPLINE_KAFKA_BOOTSTRAP": bootstrap, "PERPLINE_MATCHER_FSYNC": fsync,
           "PERPLINE_READY_FILE": str(ready), "PERPLINE_MATCHER_SNAPSHOT_EVERY": "100000"}
    prof = ["-m", "cProfile", "-o", f"{os.environ['BENCH_PROFILE']}.{shard}"] if os.environ.get("BENCH_PROFILE") else []
    if prof and shards == 1:
        prof[-1] = os.environ["BENCH_PROFILE"]
    return subprocess.Popen([sys.executable, *prof, "-m", "perpline.matcher.runner", "--data-dir", str(data_dir),
                             "--shard", str(shard), "--shards", str(shards), "--metrics-port", "0"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--fsync", default="batch", choices=["batch", "interval", "never"])
    parser.add_argument("--shards", type=int, default=1, help="matcher processes (at most the partitions of orders)")
    parser.add_argument("--symbols", type=int, default=None, help=f"symbols the inputs are split over (default: --shards, "
                                                                   f"at most {len(SYMBOLS)})")
    args = parser.parse_args()
    per_symbol = symbol_inputs(args.inputs, args.symbols or args.shards)
    inputs = sum(len(p) for p in per_symbol.values())
    wanted = sum(expected_event_count(payloads, symbol) for symbol, payloads in per_symbol.items())
    broker, bootstrap = start_broker()
    try:
        preload(bootstrap, per_symbol)
        broker_ceiling = ceiling(bootstrap, inputs)
        seconds = run_matcher(bootstrap, args.fsync, wanted, args.shards)
    finally:
        broker.terminate()
        broker.wait(30)
    args.inputs = inputs
    report: dict[str, Any] = {"inputs": args.inputs, "events": wanted, "fsync": args.fsync, "shards": args.shards,
                              "symbols": len(per_symbol),
                              "runner_inputs_per_s": round(args.inputs / seconds),
                              "runner_events_per_s": round(wanted / seconds),
                              "broker_consume_produce_per_s": round(broker_ceiling),
                              "ratio_vs_broker": round(args.inputs / seconds / broker_ceiling, 2)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
