"""Producer ids and transactions in the embedded broker.

A transactional id keeps its producer id across restarts; each InitProducerId bumps its epoch and
aborts what the previous holder left open (markers written at once), so a restarted processor never
leaves readers stuck behind a dead transaction. An older epoch is fenced. A transaction open for
longer than its timeout is aborted and its epoch bumped, as Kafka does, so a stalled producer cannot
hold the last stable offset of its partitions back for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from perpline.broker import errors as e

MAX_TRANSACTIONAL_IDS = 10_000
MAX_TXN_PARTITIONS = 10_000
MAX_TXN_TIMEOUT_MS = 15 * 60_000

TopicPartition = tuple[str, int]
Offsets = dict[TopicPartition, tuple[int, str | None]]
# writes a marker: (topic, partition, producer id, epoch, commit)
WriteMarker = Callable[[str, int, int, int, bool], None]
StoreOffsets = Callable[[str, Offsets], None]


@dataclass(slots=True)
class Txn:
    transactional_id: str
    producer_id: int
    epoch: int
    timeout_ms: int
    partitions: set[TopicPartition] = field(default_factory=set)
    offsets: dict[str, Offsets] = field(default_factory=dict)
    began: float = 0.0

    @property
    def open(self) -> bool:
        return bool(self.partitions or self.offsets)


class Transactions:
    """The transaction coordinator: one per broker."""

    def __init__(self, write_marker: WriteMarker, store_offsets: StoreOffsets) -> None:
        self.by_id: dict[str, Txn] = {}
        self.epochs: dict[int, int] = {}  # producer id -> current epoch (transactional producers)
        self._next_pid = 1000
        self._write_marker = write_marker
        self._store_offsets = store_offsets

    def new_producer_id(self) -> int:
        self._next_pid += 1
        return self._next_pid

    def init(self, transactional_id: str | None, timeout_ms: int) -> tuple[int, int, int]:
        """(error, producer id, epoch) for InitProducerId."""
        if transactional_id is None:
            return e.NONE, self.new_producer_id(), 0
        if not 0 < timeout_ms <= MAX_TXN_TIMEOUT_MS:
            return e.INVALID_REQUEST, -1, -1
        txn = self.by_id.get(transactional_id)
        if txn is None:
            if len(self.by_id) >= MAX_TRANSACTIONAL_IDS:
                raise e.BrokerLimit(f"more than {MAX_TRANSACTIONAL_IDS} transactional ids")
            txn = self.by_id[transactional_id] = Txn(transactional_id, self.new_producer_id(), -1, timeout_ms)
        if txn.open:
            self._end(txn, commit=False)
        txn.epoch += 1
        if txn.epoch >= 32767:  # epoch exhausted: a new producer id, as Kafka does
            txn.producer_id, txn.epoch = self.new_producer_id(), 0
        txn.timeout_ms = timeout_ms
        self.epochs[txn.producer_id] = txn.epoch
        return e.NONE, txn.producer_id, txn.epoch

    def fenced(self, producer_id: int, epoch: int) -> bool:
        """True when a transactional producer writes with an epoch older than its id's current one."""
        current = self.epochs.get(producer_id)
        return current is not None and epoch < current

    def _check(self, transactional_id: str, producer_id: int, epoch: int) -> tuple[int, Txn | None]:
        txn = self.by_id.get(transactional_id)
        if txn is None or txn.producer_id != producer_id:
            return e.INVALID_PRODUCER_ID_MAPPING, None
        if epoch != txn.epoch:
            return e.INVALID_PRODUCER_EPOCH, None
        return e.NONE, txn

    def add_partitions(self, transactional_id: str, producer_id: int, epoch: int,
                       partitions: list[TopicPartition]) -> int:
        error, txn = self._check(transactional_id, producer_id, epoch)
        if txn is None:
            return error
        if len(txn.partitions) + len(partitions) > MAX_TXN_PARTITIONS:
            return e.INVALID_REQUEST
        self._begin(txn)
        txn.partitions.update(partitions)
        return e.NONE

    def add_offsets(self, transactional_id: str, producer_id: int, epoch: int, group_id: str) -> int:
        error, txn = self._check(transactional_id, producer_id, epoch)
        if txn is None:
            return error
        self._begin(txn)
        txn.offsets.setdefault(group_id, {})
        return e.NONE

    def commit_offsets(self, transactional_id: str, producer_id: int, epoch: int, group_id: str,
                       offsets: Offsets) -> int:
        error, txn = self._check(transactional_id, producer_id, epoch)
        if txn is None:
            return error
        if group_id not in txn.offsets:
            return e.INVALID_TXN_STATE
        txn.offsets[group_id].update(offsets)
        return e.NONE

    def end(self, transactional_id: str, producer_id: int, epoch: int, commit: bool) -> int:
        error, txn = self._check(transactional_id, producer_id, epoch)
        if txn is None:
            return error
        self._end(txn, commit)
        return e.NONE

    def _begin(self, txn: Txn) -> None:
        if not txn.open:
            txn.began = time.monotonic()

    def _end(self, txn: Txn, commit: bool) -> None:
        for topic, partition in sorted(txn.partitions):
            self._write_marker(topic, partition, txn.producer_id, txn.epoch, commit)
        if commit:
            for group_id, offsets in txn.offsets.items():
                self._store_offsets(group_id, offsets)
        txn.partitions, txn.offsets = set(), {}

    def expire(self) -> list[str]:
        """Abort transactions open past their timeout (their producers are fenced); returns their ids."""
        now = time.monotonic()
        expired = [t for t in self.by_id.values() if t.open and now - t.began > t.timeout_ms / 1000]
        for txn in expired:
            self._end(txn, commit=False)
            txn.epoch += 1
            self.epochs[txn.producer_id] = txn.epoch
        return [t.transactional_id for t in expired]
