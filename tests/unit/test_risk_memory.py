"""FinishedFirst: bounded memory that forgets the oldest finished entries and never one in flight."""

from __future__ import annotations

from perpline.risk.memory import FinishedFirst


def test_past_the_bound_the_oldest_finished_entries_go_and_in_flight_ones_stay() -> None:
    memory: FinishedFirst[int, str] = FinishedFirst(100)
    for key in range(150):
        memory[key] = "done" if key % 2 else "in flight"
    memory[0] = "in flight"  # a write makes an entry the newest
    forgotten = memory.forget_finished(lambda _, value: value == "done")
    assert forgotten == 60 and len(memory) == 90
    assert all(key in memory for key in range(0, 150, 2))  # every entry in flight is kept
    assert [key for key in range(1, 150, 2) if key in memory] == list(range(121, 150, 2))  # the newest finished


def test_everything_in_flight_is_kept_and_not_rescanned_on_every_write() -> None:
    memory: FinishedFirst[int, int] = FinishedFirst(100)
    calls: list[int] = []

    def finished(key: int, _: int) -> bool:
        calls.append(key)
        return False

    for key in range(101):
        memory[key] = key
    assert memory.forget_finished(finished) == 0 and len(memory) == 101 and len(calls) == 101
    memory[101] = 101
    assert memory.forget_finished(finished) == 0 and len(calls) == 101  # next sweep after bound // 10 writes
    for key in range(102, 120):
        memory[key] = key
    memory.forget_finished(finished)
    assert len(calls) == 101 + 120 and len(memory) == 120
