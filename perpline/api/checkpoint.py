"""Read-model checkpoints on the api.checkpoints topic: how a new API replica starts without replaying history.

A checkpoint is the read model's whole state (perpline.api.snapshot, bounded by accounts and symbols)
with the topic positions it was captured at (the next offset of every partition of the topics it
reads). A replica starting restores the newest checkpoint and consumes from those positions, so it
applies every later event exactly as the replica that wrote it would have: nothing between the
checkpoint and live consumption is missed, nothing is applied twice.

Layout: partition 1 holds the state in chunks of at most CHUNK_BYTES (a record is capped at 1 MiB),
keyed "<checkpoint id>/<index>"; partition 0 holds one small Manifest per checkpoint, produced after
all of its chunks were acknowledged, so the newest manifest (partition 0's last record) always names
a complete checkpoint. A writer that dies half-way leaves chunks no manifest names: never read.

Why a topic and not ClickHouse: the API reads ClickHouse as a read-only user, the sink's tables hold
neither the book mirror, the matcher's per-order tracking, the marks nor the command results, and a
replica rebuilt from them would not be the same as one that replayed (docs/architecture.md). The
embedded broker keeps every record (no compaction, no deletion), so checkpoints cost one state per
PERPLINE_API_CHECKPOINT_EVENTS source events of broker memory; on Redpanda the topic may be compacted
(keys are unique per checkpoint and index, so only retention by time or size applies to it).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from perpline.config import kafka_config, producer_config

log = logging.getLogger("perpline.api.checkpoint")

MANIFEST_PARTITION = 0
CHUNK_PARTITION = 1
CHUNK_BYTES = 512 * 1024
MAX_CHUNKS = 16_384  # 8 GiB: a larger state is refused, never written half
READ_TIMEOUT_S = 60.0
FETCH_BYTES = 16 * 1024 * 1024  # one fetch's most (the consumer also queues up to 64 MiB ahead)


class Manifest(msgspec.Struct):
    checkpoint_id: str
    positions: dict[str, dict[int, int]]  # physical topic -> partition -> next offset to consume
    first_chunk_offset: int  # where partition 1 holds its first chunk (later ones may interleave with another writer's)
    chunks: int
    state_bytes: int
    ts_ms: int

    def events(self) -> int:
        """How many source records lie behind the checkpoint: how far it is into the history."""
        return events_at(self.positions)


def events_at(positions: dict[str, dict[int, int]]) -> int:
    return sum(sum(parts.values()) for parts in positions.values())


def _consumer(bootstrap: str) -> Consumer:
    """A reader of checkpoints, in bulk: a checkpoint is read once, as fast as the broker answers.
    A waiting fetch on the embedded broker may take up to its wait to be answered (docs/architecture.md),
    so the wait is 1 ms (at 0 the embedded broker answers nothing at all); each fetch may bring up to
    FETCH_BYTES (the embedded broker caps one at 5 MiB).
    With librdkafka's defaults (500 ms, 1 MiB per partition) an 82 MB state took 1.2 s to read."""
    return Consumer(kafka_config(bootstrap, **{
        "group.id": "perpline-api-checkpoint", "enable.auto.commit": False, "enable.partition.eof": True,
        "isolation.level": "read_committed", "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 1, "max.partition.fetch.bytes": FETCH_BYTES, "fetch.max.bytes": FETCH_BYTES,
    }))


def latest_manifest(bootstrap: str, topic: str, timeout_s: float = 10.0) -> Manifest | None:
    """The newest checkpoint's manifest, or None when there is none (or the topic cannot be read)."""
    consumer = _consumer(bootstrap)
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, MANIFEST_PARTITION), timeout=timeout_s)
        if high <= low:
            return None
        consumer.assign([TopicPartition(topic, MANIFEST_PARTITION, high - 1)])
        records = _read(consumer, 1, timeout_s)
        return msgspec.msgpack.decode(records[0].value(), type=Manifest) if records else None
    except (KafkaError, msgspec.DecodeError, msgspec.ValidationError, RuntimeError) as exc:
        log.warning("no checkpoint readable", extra={"error": str(exc)})
        return None
    finally:
        consumer.close()


def load(bootstrap: str, topic: str, manifest: Manifest, timeout_s: float = READ_TIMEOUT_S) -> bytes:
    """The state blob `manifest` names; RuntimeError when its chunks cannot all be read in time."""
    consumer = _consumer(bootstrap)
    parts: dict[int, bytes] = {}
    prefix = f"{manifest.checkpoint_id}/".encode()
    try:
        consumer.assign([TopicPartition(topic, CHUNK_PARTITION, manifest.first_chunk_offset)])
        deadline = time.monotonic() + timeout_s
        while len(parts) < manifest.chunks:
            if time.monotonic() > deadline:
                raise RuntimeError(f"checkpoint {manifest.checkpoint_id}: {len(parts)} of {manifest.chunks} chunks")
            for record in _read(consumer, 500, 1.0, stop_at_eof=False):
                key = record.key() or b""
                if key.startswith(prefix):
                    parts[int(key[len(prefix):])] = record.value()
    finally:
        consumer.close()
    blob = b"".join(parts[i] for i in range(manifest.chunks))
    if len(blob) != manifest.state_bytes:
        raise RuntimeError(f"checkpoint {manifest.checkpoint_id}: {len(blob)} bytes, manifest says {manifest.state_bytes}")
    return blob


def _read(consumer: Consumer, n: int, timeout_s: float, stop_at_eof: bool = True) -> list[Any]:
    """Up to `n` records; stops early at the partition's end when `stop_at_eof`."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        for msg in consumer.consume(n - len(out), timeout=0.2):
            err = msg.error()
            if err is None:
                out.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                if stop_at_eof:
                    return out
            else:
                raise RuntimeError(str(err))
    return out


class Writer:
    """Publishes checkpoints: the chunks, then (once all are acknowledged) the manifest."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(producer_config(bootstrap, **{"compression.type": "lz4", "linger.ms": 5}))

    def write(self, positions: dict[str, dict[int, int]], blob: bytes, timeout_s: float = READ_TIMEOUT_S) -> Manifest:
        chunks = [blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
        if len(chunks) > MAX_CHUNKS:
            raise RuntimeError(f"state of {len(blob)} bytes is over {MAX_CHUNKS} chunks")
        checkpoint_id = uuid.uuid4().hex
        first: list[int] = []
        failed: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(str(err))
            elif not first:
                first.append(msg.offset())

        for i, chunk in enumerate(chunks):
            self.producer.produce(self.topic, chunk, f"{checkpoint_id}/{i}".encode(), partition=CHUNK_PARTITION,
                                  on_delivery=delivered)
            self.producer.poll(0)
        if self.producer.flush(timeout_s) or failed or not first:
            raise RuntimeError(f"checkpoint chunks not acknowledged: {failed[:1]}")
        manifest = Manifest(checkpoint_id, positions, first[0], len(chunks), len(blob), int(time.time() * 1000))
        self.producer.produce(self.topic, msgspec.msgpack.encode(manifest), checkpoint_id.encode(),
                              partition=MANIFEST_PARTITION, on_delivery=delivered)
        if self.producer.flush(timeout_s) or failed:
            raise RuntimeError(f"checkpoint manifest not acknowledged: {failed[:1]}")
        return manifest

    def close(self) -> None:
        self.producer.flush(10)
