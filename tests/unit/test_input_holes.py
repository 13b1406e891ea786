"""perpline.pipelines.gaps: a message after a hole that holds data is not processed; its partition is re-read
from the hole (the embedded broker can hand over a later batch before an earlier one is stored)."""

from __future__ import annotations

from typing import Any

from perpline.pipelines import gaps

TOPIC = "account.commands"


class Holes:
    """A hole reader answering from a set of offsets that hold data; records each question."""

    def __init__(self, data: set[int]) -> None:
        self.data, self.asked = data, []  # type: ignore[var-annotated]

    def __call__(self, topic: str, partition: int, first: int, seen: int) -> bool:
        self.asked.append((topic, partition, first, seen))
        return any(first <= o < seen for o in self.data)


def test_in_order_messages_never_ask_the_broker() -> None:
    holes = Holes(set())
    guard = gaps.GapGuard([TOPIC], holes)
    assert [guard.admit(TOPIC, 0, o) for o in range(5)] == [None] * 5
    assert holes.asked == []


def test_a_hole_with_data_is_re_read_and_then_the_partition_goes_on() -> None:
    holes = Holes({3, 4})
    guard = gaps.GapGuard([TOPIC], holes)
    assert [guard.admit(TOPIC, 0, o) for o in (0, 1, 2)] == [None] * 3
    assert guard.admit(TOPIC, 0, 5) == 3  # 3 and 4 were stored late: seek back to 3, 5 not processed
    assert holes.asked == [(TOPIC, 0, 3, 5)]
    assert [guard.admit(TOPIC, 0, o) for o in (3, 4, 5, 6)] == [None] * 4  # the re-read, in order


def test_an_empty_hole_is_passed_over_once() -> None:
    holes = Holes(set())  # transaction markers, say
    guard = gaps.GapGuard([TOPIC], holes)
    guard.admit(TOPIC, 0, 10)
    assert guard.admit(TOPIC, 0, 12) is None and guard.admit(TOPIC, 0, 13) is None
    assert holes.asked == [(TOPIC, 0, 11, 12)]


def test_partitions_and_topics_are_apart_and_other_topics_unwatched() -> None:
    holes = Holes({1})
    guard = gaps.GapGuard([TOPIC], holes)
    guard.admit(TOPIC, 0, 0)
    assert guard.admit(TOPIC, 1, 7) is None  # the first message of partition 1
    assert guard.admit("other", 0, 50) is None and guard.admit("other", 0, 90) is None
    assert guard.admit(TOPIC, 0, 2) == 1


def test_a_rebalance_forgets_every_partition() -> None:
    holes = Holes({5})
    guard = gaps.GapGuard([TOPIC], holes)
    guard.admit(TOPIC, 0, 4)
    guard.forget()  # another consumer may have processed 5..9 and committed 10
    assert guard.admit(TOPIC, 0, 10) is None and holes.asked == []


class Msg:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class FakeConsumer:
    def __init__(self, offsets: list[int]) -> None:
        self.queue = [Msg(o) for o in offsets]
        self.seeks: list[tuple[str, int, int]] = []

    def _poll_unbuffered(self, timeout: float | None = None) -> Any:
        return self.queue.pop(0) if self.queue else None

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))
        self.queue = [Msg(o) for o in (1, 2, 3)]  # the re-fetch, now in order


class FakeApp:
    def __init__(self, consumer: FakeConsumer) -> None:
        self._consumer = consumer
        self.rebalances = 0
        self._on_assign = self._on_revoke = self._on_lost = self._count

    def _count(self, consumer: Any, partitions: Any) -> None:
        self.rebalances += 1


def test_the_wrapped_consumer_drops_the_message_after_a_hole_and_seeks_back() -> None:
    consumer = FakeConsumer([0, 3])  # 1 and 2 stored late
    app = FakeApp(consumer)
    guard = gaps.guard_inputs(app, [TOPIC], Holes({1, 2}))
    handed = [consumer._poll_unbuffered(0) for _ in range(5)]
    assert [m.offset() if m else None for m in handed] == [0, None, 1, 2, 3]
    assert consumer.seeks == [(TOPIC, 0, 1)]
    guard.expected[(TOPIC, 0)] = 99
    app._on_revoke(None, [])
    assert guard.expected == {} and app.rebalances == 1  # Quix's own callback still runs
