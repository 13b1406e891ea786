"""Never step over records a fetch did not return: a hole in an input partition's offsets is re-read.

The embedded broker (Tansu 0.6, memory storage) raises a partition's high watermark before it
stores the batch that the raise is for (`dynostore.rs`: the offset is taken, then the batch is
put), and its fetch lists whichever batches are stored below the watermark. So when two producers
write one partition at once, a fetch can return the second batch while the first is not stored
yet: the consumer's position moves past the first, and it is never read. account.commands has
many writers (the API, the matcher's settlement legs, the risk process, the reconciler, the
wallet); under load (bench.load, 32 pairs, one partition) the accounts processor skipped a few
commands now and then: orders never answered (-1007) and trades never settled
(`trade_settlement` breaks).

The guard watches the offsets the consumer hands over, per input partition. An offset above the
next expected one is a hole; a second consumer (read_committed) reads the hole, and if a data
record is there the processor's consumer seeks back to the hole's start and the message is
dropped: nothing after the hole has been processed, so nothing is undone, and the re-fetch
returns the late batch in order. A hole with no data in it (transaction markers, aborted records,
records deleted by retention) is passed over. On Redpanda a hole in a partition written without
transactions does not happen; the guard costs a comparison per message there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Counter

from perpline.config import kafka_config
from perpline.topics_tool import first_data_offsets

log = logging.getLogger("perpline.pipelines.gaps")
PROBE_S = 2.0  # how long the hole's read may take before the hole is taken as holding data
HOLES = Counter("perpline_input_holes_total", "holes in an input partition's offsets, by outcome",
                ["topic", "outcome"])

HoleHasData = Callable[[str, int, int, int], bool]  # (topic, partition, first missing, offset seen)


class GapGuard:
    """Per input partition, the next offset expected; `admit` says whether a message may be processed."""

    def __init__(self, topics: Iterable[str], has_data: HoleHasData) -> None:
        self.topics = frozenset(topics)
        self.has_data = has_data
        self.expected: dict[tuple[str, int], int] = {}

    def admit(self, topic: str, partition: int, offset: int) -> int | None:
        """None: process the message. Else the offset to seek back to (the message is not processed)."""
        if topic not in self.topics:
            return None
        key = (topic, partition)
        want = self.expected.get(key)
        if want is not None and offset > want:
            if self.has_data(topic, partition, want, offset):
                HOLES.labels(topic, "re-read").inc()
                log.warning("input hole re-read",
                            extra={"topic": topic, "partition": partition, "from": want, "seen": offset})
                return want
            HOLES.labels(topic, "empty").inc()
        self.expected[key] = offset + 1  # the first message, the next one, one re-read after a seek, after an empty hole
        return None

    def forget(self) -> None:
        """On every rebalance: a partition assigned again starts from its committed offset, which another
        consumer may have moved on meanwhile."""
        self.expected.clear()


class HoleReader:
    """Reads a hole with a consumer of its own (no group, read_committed), made on the first hole."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumer: Consumer | None = None

    def __call__(self, topic: str, partition: int, first: int, seen: int) -> bool:
        consumer = self._consumer or self._make()
        # not read within PROBE_S: the start itself, so the hole is re-read rather than stepped over
        return first_data_offsets(consumer, {(topic, partition): first}, PROBE_S)[(topic, partition)] < seen

    def _make(self) -> Consumer:
        self._consumer = Consumer(kafka_config(self.bootstrap, **{
            "group.id": "perpline-hole-reader", "enable.auto.commit": False, "isolation.level": "read_committed",
            "enable.partition.eof": True, "fetch.wait.max.ms": 10}))
        return self._consumer


def guard_inputs(app: Any, topics: Iterable[str], has_data: HoleHasData) -> GapGuard:
    """Wrap `app`'s consumer (a Quix Application) so a message after a hole with data in it is dropped
    and its partition re-read from the hole. Quix 3.28 has no public hook: the wrap is on its instance."""
    guard = GapGuard(topics, has_data)
    consumer = app._consumer  # noqa: SLF001 (no public hook in quixstreams 3.28)
    poll_unbuffered = consumer._poll_unbuffered  # noqa: SLF001

    def poll(timeout: float | None = None) -> Any:
        msg = poll_unbuffered(timeout=timeout)
        if msg is None:
            return None
        back = guard.admit(msg.topic(), msg.partition(), msg.offset())
        if back is None:
            return msg
        consumer.seek(TopicPartition(msg.topic(), msg.partition(), back))
        return None

    consumer._poll_unbuffered = poll  # noqa: SLF001
    _forget_on_rebalance(app, guard)
    return guard


def _forget_on_rebalance(app: Any, guard: GapGuard) -> None:
    for name in ("_on_assign", "_on_revoke", "_on_lost"):
        setattr(app, name, _then_forget(getattr(app, name), guard))


def _then_forget(callback: Callable[[Any, Any], None], guard: GapGuard) -> Callable[[Any, Any], None]:
    def wrapped(consumer: Any, partitions: Any) -> None:
        guard.forget()
        callback(consumer, partitions)
    return wrapped
