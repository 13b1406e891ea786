"""The matcher shell: Kafka in, WAL, engine, Kafka out. One process owns all symbols of its shard.

Shards (perpline.matcher.shards): shard I of N owns the `orders` partitions p with p % N == I, assigned
statically, with its own WAL and snapshots (<data-dir>/shard-I when N > 1); N == 1 owns every partition.

Loop, read top to bottom:
  1. poll a batch of inputs from `orders` (this shard's partitions, manually assigned, no consumer group)
  2. decode into the core's integers; a malformed input goes to dead.letters (produced after step 3) and
     is still logged in the WAL as skipped
  3. append the batch to the WAL as ONE binary record (perpline.matcher.walrec: the inputs as the core
     consumes them, not their JSON), group commit, fsync policy      -- durable before acting
  4. apply the batch: one engine.execute() call per symbol (compiled) -> events with gap-free seq
  5. produce the events to matcher.events keyed by symbol, and their settlement legs to
     account.commands keyed by account (perpline.matcher.legs; acks=all, idempotent), without
     waiting: a delivery failure stops the process; at most MAX_UNACKED records are in flight
  6. every N inputs or T seconds: flush (every event acknowledged), then snapshot engines +
     source offsets atomically. So every event not yet acknowledged comes from an input in the
     WAL tail after the newest snapshot, and recovery re-emits it.
Recovery: newest good snapshot + WAL tail replayed (events and legs re-emitted; consumers drop seen seq),
then resume from the offsets the WAL recorded. A binary record goes straight into the core's Batch arrays
(no JSON, no decimal parsing); a version-1 record (source position + raw JSON input, WALs written before
the binary records) is still decoded from its JSON. Every event of the tail after the newest snapshot is
re-emitted, acknowledged or not: which of them were acknowledged is not persisted anywhere (a snapshot is
the only record of it), so re-emitting fewer could lose events.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from perpline import push
from perpline.config import (
    fetch_config,
    kafka_config,
    producer_config,
    settings,
    topic_map,
)
from perpline.consume import poll_batch
from perpline.contracts import codec
from perpline.contracts.codes import Code
from perpline.contracts.dead_letters import dead_letter
from perpline.contracts.instruments import load_catalog
from perpline.contracts.units import UnitError
from perpline.matcher import convert, shards, snapshot, walrec
from perpline.matcher.legs import legs
from perpline.matcher.loader import load_core
from perpline.matcher.segments import SegmentedWal
from perpline.obs import LagWatcher, clear_ready, mark_ready, serve_metrics, setup_logging

log = logging.getLogger("perpline.matcher")

MAX_BATCH = 1000
MAX_UNACKED = 100_000  # events produced but not yet acknowledged; above this we wait for the broker
SNAPSHOT_EVERY_INPUTS = int(os.environ.get("PERPLINE_MATCHER_SNAPSHOT_EVERY", "10000"))
SNAPSHOT_EVERY_S = 30.0
KEEP_SNAPSHOTS = 3

INPUTS = Counter("perpline_matcher_inputs_total", "inputs applied", ["symbol"])
EVENTS = Counter("perpline_matcher_events_total", "events emitted", ["symbol", "type"])
LEGS = Counter("perpline_matcher_legs_total", "settlement legs emitted to account.commands", ["type"])
DEAD = Counter("perpline_matcher_dead_letters_total", "malformed inputs sent to dead.letters")
BATCH_SECONDS = Histogram("perpline_matcher_batch_seconds", "time to WAL, apply and publish one batch")
WAL_FSYNC = Histogram("perpline_matcher_wal_fsync_seconds", "WAL group commit time")
RECOVERY_SECONDS = Gauge("perpline_matcher_recovery_seconds", "time spent recovering at start")
SEQ = Gauge("perpline_matcher_seq", "last seq per symbol", ["symbol"])
BATCH_SIZE = Histogram("perpline_matcher_batch_inputs", "inputs per consumed batch",
                       buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
BOOK_ORDERS = Gauge("perpline_matcher_book_orders", "resting orders per symbol", ["symbol"])
BOOK_LEVELS = Gauge("perpline_matcher_book_levels", "price levels per symbol and side", ["symbol", "side"])


@dataclass
class MatcherState:
    """Everything recovery must restore: engines per symbol and the next offset per source partition."""

    engines: dict[str, Any] = field(default_factory=dict)
    next_offsets: dict[int, int] = field(default_factory=dict)
    inputs_since_snapshot: int = 0


class Matcher:
    def __init__(self, data_dir: Path, bootstrap: str, topics: dict[str, str], fsync: str,
                 shard: shards.Shard | None = None, pusher: push.PushServer | None = None) -> None:
        """`data_dir` is this shard's own dir (shards.claim checked it); `shard` defaults to the only one.
        `pusher`: where the events are also pushed to API processes once produced (perpline.push); only
        with the `batch` fsync policy, under which every event pushed is re-emitted alike after a crash."""
        assert pusher is None or fsync == "batch", "events are pushed only when the WAL is durable before acting"
        self.pusher = pusher
        self.shard = shard or shards.Shard(0, 1)
        self.partition_count = shards.orders_partitions()
        self.owned = self.shard.partitions(range(self.partition_count))  # the broker's answer replaces it in run()
        self.core = load_core(pure=os.environ.get("PERPLINE_MATCHER_PURE") == "1")
        self.data_dir = data_dir
        self.topics = topics
        self.bootstrap = bootstrap
        data_dir.mkdir(parents=True, exist_ok=True)
        self.state = MatcherState()
        self.snap_dir = data_dir / "snapshots"
        self.wal = SegmentedWal(data_dir / "wal", fsync)
        self.fsync = fsync
        self._stop = False
        self._delivery_error: str | None = None
        self._last_snapshot = time.monotonic()
        self._lag = LagWatcher("perpline-matcher")

    # --- recovery ------------------------------------------------------------------------
    def recover(self) -> list[tuple[str, list[Any]]]:
        """Restore engines; returns the events of the replayed WAL tail, to re-emit. The cyclic garbage
        collector is off meanwhile: the replay allocates millions of objects that all stay alive (the
        events to re-emit), so every collection would scan them again for nothing (half a long replay)."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._recover()
        finally:
            if collecting:
                gc.enable()

    def _recover(self) -> list[tuple[str, list[Any]]]:
        started = time.monotonic()
        loaded = snapshot.load_latest(self.snap_dir)
        wal_from = 0
        if loaded is not None:
            wal_from = self._restore(loaded)
        replayed: list[tuple[str, list[Any]]] = []
        index = 0
        inputs = 0
        tail: list[bytes] = []
        for index, payload in self.wal.recover():
            if index <= wal_from:
                continue
            tail.append(payload)
            inputs += walrec.rows(payload)
            if len(tail) >= MAX_BATCH or walrec.is_binary(payload):  # a binary record is a whole batch already
                replayed.extend(self._apply_records(tail))
                tail = []
        replayed.extend(self._apply_records(tail))
        index = max(index, wal_from)
        self.state.inputs_since_snapshot = inputs  # a long replayed tail brings the next snapshot closer
        self.wal.records = index
        self.wal.open()
        RECOVERY_SECONDS.set(time.monotonic() - started)
        log.info("recovered", extra={"snapshot_wal_records": wal_from, "wal_records": index,
                                     "replayed_inputs": inputs, "offsets": self.state.next_offsets})
        return replayed

    def _restore(self, loaded: snapshot.Snapshot) -> int:
        header_line, _, body = loaded.data.partition(b"\n")
        doc = json.loads(header_line)
        shards.check_snapshot(self.shard, doc, self.partition_count)
        self.state.next_offsets = {int(k): v for k, v in doc["next_offsets"].items()}
        start = 0
        for symbol, size in doc["engines"]:
            self.state.engines[symbol] = self.core.Engine.from_snapshot(body[start:start + size])
            start += size
        assert start == len(body), "snapshot engines do not fill the snapshot"
        return int(doc["wal_records"])

    # --- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        replayed = self.recover()
        self.producer = Producer(producer_config(self.bootstrap, **{"batch.num.messages": 10000}))
        self._publish(replayed)
        consumer = self._consumer()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("matcher ready", extra={"symbols": list(load_catalog().instruments), "shard": self.shard.shard,
                                         "shards": self.shard.shards, "partitions": self.owned})
        mark_ready()
        try:
            while not self._stop:
                batch = [msg for msg in poll_batch(consumer, MAX_BATCH, 0.1) if self._keep(msg)]
                if batch:
                    self._process(batch)
                self._maybe_snapshot()
        finally:
            self._lag.unwatch()
            consumer.close()
            flushed = self.producer.flush(10) == 0
            if flushed and self._delivery_error is None and self.state.inputs_since_snapshot:
                self.take_snapshot()  # a clean stop restarts from here with no WAL tail to replay
            self.wal.close()
            clear_ready()

    def _on_signal(self, *_: Any) -> None:
        self._stop = True

    def _consumer(self) -> Consumer:
        consumer = Consumer(kafka_config(self.bootstrap, **{"group.id": "perpline-matcher",
                                                            "enable.auto.commit": False,
                                                            "isolation.level": "read_committed",
                                                            "auto.offset.reset": "earliest", **fetch_config()}))
        name = self.topics["orders"]
        meta = consumer.list_topics(name, timeout=15).topics[name]
        self.owned = self._owned(sorted(meta.partitions))
        parts = [TopicPartition(name, p, self.state.next_offsets.get(p, 0)) for p in self.owned]
        consumer.assign(parts)
        self._lag.watch(consumer, parts)
        return consumer

    def _owned(self, on_broker: list[int]) -> list[int]:
        """This shard's partitions of `orders` as the broker has it. With N > 1 the broker must have exactly the
        partitions topics.yaml declares: the shard's identity (its data dir, its snapshots) was recorded with them."""
        if self.shard.shards > 1 and on_broker != list(range(self.partition_count)):
            raise shards.ShardError(Code.MATCHER_SHARD_MISMATCH,
                                    f"`orders` has partitions {on_broker} on the broker, topics.yaml declares "
                                    f"{self.partition_count}: {self.shard} cannot know which symbols are its own")
        return self.shard.partitions(on_broker)

    @staticmethod
    def _keep(msg: Any) -> bool:
        err = msg.error()
        if err is not None and err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", extra={"error": str(err)})
        return err is None

    def _process(self, batch: list[Any]) -> None:
        started = time.monotonic()
        record, letters = self._encode([(msg.partition(), msg.offset(), msg.value() or b"") for msg in batch])
        t0 = time.monotonic()
        self.wal.append_batch([record])
        WAL_FSYNC.observe(time.monotonic() - t0)
        for raw, pos, error in letters:  # after the WAL: a crash before it consumes the input again
            self._dead_letter(raw, pos, error)
        out = self._apply_records([record])
        self._publish(out)
        self.state.inputs_since_snapshot += len(batch)
        BATCH_SECONDS.observe(time.monotonic() - started)
        BATCH_SIZE.observe(len(batch))
        self._book_gauges({symbol for symbol, _ in out})

    def _book_gauges(self, symbols: set[str]) -> None:
        for symbol in symbols:
            engine = self.state.engines[symbol]
            BOOK_ORDERS.labels(symbol).set(engine.order_count())
            bid_levels, ask_levels = engine.level_counts()
            BOOK_LEVELS.labels(symbol, "bid").set(bid_levels)
            BOOK_LEVELS.labels(symbol, "ask").set(ask_levels)

    def _apply_record(self, record: bytes) -> list[tuple[str, list[Any]]]:
        return self._apply_records([record])

    def _apply_records(self, records: list[bytes]) -> list[tuple[str, list[Any]]]:
        """Apply WAL records in order; returns (symbol, events) per applied input (dead letters have none).
        Consecutive version-1 records (raw JSON) are decoded into one binary record first."""
        out: list[tuple[str, list[Any]]] = []
        legacy: list[tuple[int, int, bytes]] = []
        for record in records:
            if walrec.is_binary(record):
                out.extend(self._apply_legacy(legacy))
                legacy = []
                out.extend(self._apply_binary(record))
            else:
                partition, offset = walrec.V1_HEAD.unpack_from(record)
                legacy.append((partition, offset, record[walrec.V1_HEAD.size:]))
        out.extend(self._apply_legacy(legacy))
        return out

    def _apply_legacy(self, inputs: list[tuple[int, int, bytes]]) -> list[tuple[str, list[Any]]]:
        if not inputs:
            return []
        record, letters = self._encode(inputs)
        for raw, pos, error in letters:
            self._dead_letter(raw, pos, error)
        return self._apply_binary(record)

    def _encode(self, inputs: list[tuple[int, int, bytes]]) -> tuple[bytes, list[tuple[bytes, dict[str, int], str]]]:
        """The binary WAL record of consumed inputs (partition, offset, raw JSON), and the dead letters of the
        malformed ones (raw, position, error), which the record keeps as skipped rows: a dead letter is
        consumed, never retried. An input from a partition this shard does not own raises before anything."""
        rows = walrec.Rows()
        letters: list[tuple[bytes, dict[str, int], str]] = []
        for partition in {partition for partition, _, _ in inputs}:
            shards.check_input(self.shard, partition)
        for partition, offset, raw in inputs:
            error = self._add_row(rows, partition, offset, raw)
            if error is not None:
                rows.skipped(partition, offset)
                letters.append((raw, {"p": partition, "o": offset}, error))
        return rows.encode(), letters

    def _add_row(self, rows: walrec.Rows, partition: int, offset: int, raw: bytes) -> str | None:
        """Add one input as the core consumes it; the error when it is malformed (nothing added then)."""
        try:
            cmd = codec.decode("orders", raw)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            return str(exc)
        if self._engine(cmd.symbol) is None:
            return f"unknown symbol {cmd.symbol!r}"
        try:
            fields = convert.fields(self.core, cmd)  # numbers are parsed before the engine is touched
        except UnitError as exc:
            return f"{exc.code.name}: {exc.msg}"
        cause_id = "" if walrec.I64_MIN <= cmd.order_id <= walrec.I64_MAX else convert._cause_id(cmd)
        rows.add(partition, offset, cmd.symbol, fields, convert.client_order_id(cmd), cmd.trace_id, cause_id)
        return None

    def _apply_binary(self, record: bytes) -> list[tuple[str, list[Any]]]:
        """Apply one binary record: each symbol's rows with one Engine.run, straight from the record's
        columns; the offsets advance past every row, skipped ones included."""
        decoded = walrec.decode(record)
        for partition in set(decoded.partitions):
            shards.check_input(self.shard, partition)
        last = dict(zip(decoded.partitions, decoded.offsets, strict=True))  # the last row of each partition wins
        self.state.next_offsets.update({partition: offset + 1 for partition, offset in last.items()})
        out: list[tuple[str, list[Any]]] = []
        for part in decoded.parts:
            engine = self._engine(part.symbol)
            if engine is None:  # the catalog lost the symbol since the record was written
                log.error("WAL inputs of a symbol no longer in the catalog skipped",
                          extra={"symbol": part.symbol, "inputs": len(part.trace_ids)})
                continue
            engine.run(walrec.batch(self.core, part))
            events = self._events(engine, part)
            out.extend(zip(repeat(part.symbol), events))
            INPUTS.labels(part.symbol).inc(len(part.trace_ids))
        return out

    def _events(self, engine: Any, part: walrec.Part) -> list[list[Any]]:
        """The contract events of each input of `part`, just applied by `engine`; the causation id of
        each input's events is rebuilt from its kind and order id unless the record carries it."""
        names = convert.CAUSE_NAMES
        causes = [cause or f"{names[kind]}:{order_id}"
                  for kind, order_id, cause in zip(part.kinds, part.order_ids, part.cause_ids, strict=True)]
        return convert.events_of(engine, self.core, convert.grid(part.symbol), part.kinds, part.trace_ids, causes)

    def _engine(self, symbol: str) -> Any:
        engine = self.state.engines.get(symbol)
        if engine is None and load_catalog().get(symbol) is not None and load_catalog().get(symbol).symbol == symbol:  # type: ignore[union-attr]
            engine = self.state.engines[symbol] = self.core.Engine(symbol, self.core.EngineConfig())
        return engine

    def _dead_letter(self, raw: bytes, pos: dict[str, int], error: str) -> None:
        DEAD.inc()
        log.error("malformed input to dead.letters", extra={"partition": pos["p"], "offset": pos["o"], "error": error})
        if not hasattr(self, "producer"):
            return  # during recovery: it was dead-lettered when first seen
        letter = dead_letter("matcher", self.topics["orders"], pos["p"], pos["o"], raw, error)
        self.producer.produce(self.topics["dead.letters"], key=b"matcher", value=codec.encode(letter))

    def _publish(self, out: list[tuple[str, list[Any]]]) -> None:
        """Produce without waiting for acknowledgements (see the module docstring, step 5): each event
        on matcher.events, and its settlement legs on account.commands, keyed by account."""
        topic, legs_topic = self.topics["matcher.events"], self.topics["account.commands"]
        counts: dict[tuple[str, str], int] = {}
        last_seq: dict[str, int] = {}
        produce, delivered = self.producer.produce, self._delivered
        pushed: list[bytes] | None = [] if self.pusher is not None else None
        for symbol, events in out:
            key = symbol.encode()
            for event in events:
                value = codec.encode(event)
                produce(topic, key=key, value=value, on_delivery=delivered)
                if pushed is not None:
                    pushed.append(value)
                for leg in legs(event):
                    produce(legs_topic, key=str(leg.account_id).encode(), value=codec.encode(leg), on_delivery=delivered)
                    LEGS.labels(type(leg).__name__).inc()
                kind = (symbol, type(event).__name__)
                counts[kind] = counts.get(kind, 0) + 1
            if events:
                last_seq[symbol] = events[-1].seq
        self.producer.poll(0)
        if self.pusher is not None and pushed:
            self.pusher.publish(push.Frame("matcher.events", push.NO_OFFSET, push.NO_OFFSET, [], pushed))
        for (symbol, name), count in counts.items():
            EVENTS.labels(symbol, name).inc(count)
        for symbol, seq in last_seq.items():
            SEQ.labels(symbol).set(seq)
        if len(self.producer) > MAX_UNACKED:
            self._flush()
        self._raise_on_failed_delivery()

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None and self._delivery_error is None:
            self._delivery_error = str(err)

    def _raise_on_failed_delivery(self) -> None:
        if self._delivery_error is not None:
            raise RuntimeError(f"event or leg delivery failed ({self._delivery_error}); stopping so recovery "
                               "re-emits from the last snapshot")

    def _flush(self) -> None:
        if self.producer.flush(30) > 0:
            raise RuntimeError("events and legs not acknowledged in 30 s; stopping so recovery re-emits them")
        self._raise_on_failed_delivery()

    def _maybe_snapshot(self) -> None:
        due = self.state.inputs_since_snapshot >= SNAPSHOT_EVERY_INPUTS or (
            self.state.inputs_since_snapshot and time.monotonic() - self._last_snapshot >= SNAPSHOT_EVERY_S)
        if due:
            self.take_snapshot()

    def take_snapshot(self) -> None:
        """Snapshot = one JSON header line (WAL position, source offsets, engine sizes) + the engines' bytes.
        Taken only once every event produced so far is acknowledged."""
        if hasattr(self, "producer"):
            self._flush()
        blobs = {s: e.to_snapshot() for s, e in sorted(self.state.engines.items())}
        header = {"wal_records": self.wal.records, "next_offsets": self.state.next_offsets,
                  "engines": [[s, len(b)] for s, b in blobs.items()], **self.shard.identity(self.partition_count)}
        data = json.dumps(header).encode() + b"\n" + b"".join(blobs.values())
        snapshot.write(self.snap_dir, self.wal.records, data, keep=KEEP_SNAPSHOTS)
        self.wal.rotate()
        kept = [s.position for s in map(snapshot.read, sorted(self.snap_dir.glob("snapshot-*.bin"))) if s is not None]
        self.wal.prune(min(kept) if kept else 0)
        self.state.inputs_since_snapshot = 0
        self._last_snapshot = time.monotonic()


def wal_record(partition: int, offset: int, raw: bytes) -> bytes:
    """A version-1 WAL record (source partition and offset, then the raw JSON input): what the matcher wrote
    before the binary records; still read, and the simplest record to build in tests."""
    return walrec.V1_HEAD.pack(partition, offset) + raw


def main(argv: list[str] | None = None) -> None:
    cfg = settings()
    parser = argparse.ArgumentParser(prog="perpline matcher")
    parser.add_argument("--data-dir", type=Path, default=cfg.data_dir / "matcher")
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core (default: $PERPLINE_MATCHER_CPU)")
    parser.add_argument("--shard", type=int, default=None,
                        help=f"this shard's index (default: ${shards.SHARD_ENV}, else the pod's StatefulSet ordinal)")
    parser.add_argument("--shards", type=int, default=None, help=f"how many shards (default: ${shards.SHARDS_ENV} or 1)")
    args = parser.parse_args(argv)
    setup_logging("matcher")
    try:
        shard = shards.resolve(args.shard, args.shards)
        data_dir = shards.claim(args.data_dir, shard, shards.orders_partitions())
        serve_metrics(args.metrics_port)
        _pin_to_core(args.cpu)
        pusher = push.server_from_env() if cfg.fsync == "batch" else None
        Matcher(data_dir, cfg.kafka_bootstrap, topic_map(), cfg.fsync, shard, pusher).run()
    except shards.ShardError as exc:  # a refusal at start (data dir, snapshot, broker's partitions): say why, exit 2
        log.error("matcher refuses to run", extra={"code": int(exc.code), "error": exc.msg})
        print(f"perpline matcher: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def _pin_to_core(flag: int | None) -> None:
    """Pin to --cpu or PERPLINE_MATCHER_CPU when given; the matcher is single-threaded by design."""
    cpu = flag if flag is not None else os.environ.get("PERPLINE_MATCHER_CPU")
    if cpu is not None and cpu != "":
        os.sched_setaffinity(0, {int(cpu)})
        log.info("pinned", extra={"cpu": int(cpu)})


if __name__ == "__main__":
    main()
