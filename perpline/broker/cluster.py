"""The embedded broker's whole state: topics and their partition logs, groups, transactions.

One process, one node, one replica of everything, memory only (the oldest batches of deleting topics
may sit in spill files, which live as long as the process): what the embedded stack needs and no
more. It is the only writer of its state and runs on one asyncio loop, so nothing here locks.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from perpline.broker import errors as e
from perpline.broker.compaction import COMPACT_MIN_GROWTH_BYTES, compact
from perpline.broker.groups import Groups
from perpline.broker.partition import PartitionLog
from perpline.broker.spill import SpillFile
from perpline.broker.txns import Offsets, Transactions

# A deleting topic's partition holding more than this in memory moves its oldest batches to its spill
# file, down to half of it (perpline.broker.spill; with a spill directory only).
SPILL_BYTES = int(os.environ.get("PERPLINE_BROKER_SPILL_BYTES", str(4 * 1024 * 1024)))
MAX_TOPICS = 1_000
MAX_PARTITIONS_PER_TOPIC = 256
NODE_ID = 1
CLUSTER_ID = "perpline-embedded"
DEFAULT_CONFIGS = {"cleanup.policy": "delete", "retention.ms": "604800000", "retention.bytes": "-1",
                   "max.message.bytes": "10485760", "message.timestamp.type": "CreateTime"}


@dataclass(slots=True)
class Topic:
    name: str
    configs: dict[str, str]
    partitions: list[PartitionLog] = field(default_factory=list)

    def bytes_stored(self) -> int:
        return sum(log.bytes_stored for log in self.partitions)

    def compacted(self) -> bool:
        return "compact" in self.configs.get("cleanup.policy", "delete")

    def retention(self) -> tuple[int, int]:
        """(ms, bytes) limits of a deleting topic; (-1, -1) when nothing is ever deleted."""
        if "delete" not in self.configs.get("cleanup.policy", "delete"):
            return -1, -1
        return int(self.configs.get("retention.ms", "-1")), int(self.configs.get("retention.bytes", "-1"))


def valid_topic_name(name: str) -> bool:
    return 0 < len(name) <= 249 and name not in (".", "..") and all(c.isalnum() or c in "._-" for c in name)


class Cluster:
    def __init__(self, host: str, port: int, spill_dir: Path | None = None) -> None:
        """`spill_dir`: where deleting topics' partitions keep their oldest batches (perpline.broker.spill);
        None keeps everything in memory."""
        self.host, self.port = host, port
        self.spill_dir = spill_dir
        self.topics: dict[str, Topic] = {}
        self.groups = Groups()
        self.txns = Transactions(self._write_marker, self._store_offsets)

    def log(self, topic: str, partition: int) -> PartitionLog | None:
        found = self.topics.get(topic)
        if found is None or not 0 <= partition < len(found.partitions):
            return None
        return found.partitions[partition]

    def create_topic(self, name: str, partitions: int, configs: dict[str, str]) -> int:
        if name in self.topics:
            return e.TOPIC_ALREADY_EXISTS
        if not valid_topic_name(name):
            return e.INVALID_TOPIC_EXCEPTION
        if not 0 < partitions <= MAX_PARTITIONS_PER_TOPIC:
            return e.INVALID_PARTITIONS
        if len(self.topics) >= MAX_TOPICS:
            return e.INVALID_REQUEST
        topic = Topic(name, {**DEFAULT_CONFIGS, **configs})
        topic.partitions = [PartitionLog(self._spill_file(topic, p)) for p in range(partitions)]
        self.topics[name] = topic
        return e.NONE

    def _spill_file(self, topic: Topic, partition: int) -> SpillFile | None:
        if self.spill_dir is None or topic.compacted():
            return None
        return SpillFile(self.spill_dir / f"{topic.name}-{partition}.batches")

    def delete_topic(self, name: str) -> int:
        topic = self.topics.pop(name, None)
        if topic is None:
            return e.UNKNOWN_TOPIC_OR_PARTITION
        for log in topic.partitions:
            log.wake()
            if log.spill is not None:
                log.spill.close()
        return e.NONE

    def _write_marker(self, topic: str, partition: int, producer_id: int, epoch: int, commit: bool) -> None:
        log = self.log(topic, partition)
        if log is not None:
            log.end_txn(producer_id, epoch, commit)

    def _store_offsets(self, group_id: str, offsets: Offsets) -> None:
        self.groups.store(group_id, offsets)

    def housekeeping(self) -> None:
        """Every tick: expire group members and transactions, compact changelogs that grew, apply retention."""
        self.groups.expire()
        self.txns.expire()
        now_ms = int(time.time() * 1000)
        for topic in self.topics.values():
            for log in topic.partitions:
                if log.spill is not None and log.memory_bytes > SPILL_BYTES:
                    log.spill_oldest(SPILL_BYTES // 2)
            if topic.compacted():
                for log in topic.partitions:
                    if log.bytes_stored - log.compacted_bytes > max(COMPACT_MIN_GROWTH_BYTES, log.compacted_bytes):
                        compact(log)
                        log.compacted_bytes = log.bytes_stored
            retention_ms, retention_bytes = topic.retention()
            if retention_ms <= 0 and retention_bytes <= 0:
                continue
            for log in topic.partitions:
                _apply_retention(log, now_ms, retention_ms, retention_bytes)


def _apply_retention(log: PartitionLog, now_ms: int, retention_ms: int, retention_bytes: int) -> None:
    """Delete whole batches from the head: older than retention_ms, or beyond retention_bytes. Never
    past the last stable offset (an open transaction's records stay)."""
    keep_from = log.log_start
    index, stored = 0, log.bytes_stored
    stable = log.last_stable
    while index < len(log.starts) and log.ends[index] <= stable:
        too_old = retention_ms > 0 and log.max_ts[index] < now_ms - retention_ms
        too_big = retention_bytes > 0 and stored > retention_bytes
        if not (too_old or too_big):
            break
        stored -= log.size_of(index)
        keep_from = log.ends[index]
        index += 1
    if keep_from > log.log_start:
        log.trim_to(keep_from)
