"""Topic-to-topic benchmark: the matcher process on the embedded broker, next to the broker's own ceiling.

    python -m bench.topic [--inputs 100000]

1. Start the embedded broker; preload `orders` with the bench.matcher flow (contract messages).
2. Ceiling, measured in the same run: one consumer reads those inputs and one producer (the
   runner's producer settings: acks=all, idempotent) writes each to a scratch topic; msgs/s.
3. The matcher (`perpline.matcher.runner`, WAL fsync per batch unless --fsync says otherwise)
   starts on the preloaded topic; from the moment it reports ready until `matcher.events` holds
   every event a straight run of the engine produces: inputs/s topic to topic.
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
    proc = subprocess.Popen([sys.executable, "-m", "perpline.broker.tansu", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert b"broker_ready" in line, f"broker did not start: {line!r}"
    return proc, f"127.0.0.1:{port}"


def expected_event_count(payloads: list[bytes]) -> int:
    core = load_core()
    engine = core.Engine("BTCUSDT-PERP", core.EngineConfig())
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


def run_matcher(bootstrap: str, fsync: str, wanted_events: int) -> float:
    with tempfile.TemporaryDirectory(prefix="perpline-bench-") as tmp:
        ready = Path(tmp) / "ready"
        env = {**os.environ, "PERPLINE_KAFKA_BOOTSTRAP": bootstrap, "PERPLINE_MATCHER_FSYNC": fsync,
               "PERPLINE_READY_FILE": str(ready), "PERPLINE_MATCHER_SNAPSHOT_EVERY": "100000"}
        prof = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        proc = subprocess.Popen([sys.executable, *prof, "-m", "perpline.matcher.runner", "--data-dir", str(Path(tmp) / "m")],
                                cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert proc.poll() is None and time.monotonic() < deadline, "matcher did not start"
                time.sleep(0.005)
            return count_until(bootstrap, "matcher.events", wanted_events, time.monotonic())
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--fsync", default="batch", choices=["batch", "interval", "never"])
    args = parser.parse_args()
    payloads = encoded_inputs(flow(args.inputs, FLOW_SEED))
    wanted = expected_event_count(payloads)
    broker, bootstrap = start_broker()
    try:
        producer = Producer(producer_config(bootstrap, **{"batch.num.messages": 10000}))
        for raw in payloads:
            producer.produce("orders", key=b"BTCUSDT-PERP", value=raw)
            producer.poll(0)
        assert producer.flush(60) == 0
        broker_ceiling = ceiling(bootstrap, args.inputs)
        seconds = run_matcher(bootstrap, args.fsync, wanted)
    finally:
        broker.terminate()
        broker.wait(30)
    report: dict[str, Any] = {"inputs": args.inputs, "events": wanted, "fsync": args.fsync,
                              "runner_inputs_per_s": round(args.inputs / seconds),
                              "runner_events_per_s": round(wanted / seconds),
                              "broker_consume_produce_per_s": round(broker_ceiling),
                              "ratio_vs_broker": round(args.inputs / seconds / broker_ceiling, 2)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
