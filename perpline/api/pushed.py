"""Records pushed by the writers (perpline.push), applied to the read model only where that cannot
change what it ends with: the topics stay the source, a push only brings a record sooner.

- account.events, by offset: a frame's records are applied from the read model's position of their
  partition onwards, in offset order, and only when they continue it (the next offset, or the frame's
  first record with `clear_from` at or before the position: the writer knows nothing committed lies
  between). The position then moves past them, so the consumer skips them when the topic brings them;
  it checks each skipped record against what was pushed (`Verified`), and applies it if they differ.
- matcher.events, by seq: an event is applied only when it is the next seq of its symbol; the topic's
  copy is then a duplicate the book mirrors already drop.
- funding.rounds, by funding time: the risk process pushes a round once the broker acknowledged it, so
  an API never shows the round's payments (account events, pushed later) before the round; the
  topic's copy is dropped as a repeat.

Whatever cannot be applied is left to the topic. Every frame is applied under the read model's apply
lock, the same one its consumer thread holds per batch, so the views see one order of records.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Protocol

import msgspec
from prometheus_client import Counter

from perpline.contracts import codec
from perpline.push import NO_OFFSET, Frame

log = logging.getLogger("perpline.api.pushed")

MAX_VERIFIED = 200_000  # pushed records remembered until the topic brings them (oldest forgotten first)
APPLIED = Counter("perpline_api_pushed_applied_total", "pushed records applied before the topic brought them", ["topic"])
LEFT = Counter("perpline_api_pushed_left_total", "pushed records left to the topic (not next in order)", ["topic"])
MISMATCHED = Counter("perpline_api_pushed_mismatch_total",
                     "records the topic brought that differ from what was pushed at their offset (applied)")


class Verified:
    """(topic, partition, offset) -> hash of the pushed value, until the consumer reaches it."""

    def __init__(self, limit: int = MAX_VERIFIED) -> None:
        self.limit = limit
        self._seen: OrderedDict[tuple[str, int, int], int] = OrderedDict()

    def remember(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._seen[(topic, partition, offset)] = hash(value)
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def already_applied(self, topic: str, partition: int, offset: int, value: bytes) -> bool:
        """True when the record behind the position is the one pushed there (or no longer remembered);
        False, counted and logged, when it differs: the caller applies it."""
        pushed = self._seen.pop((topic, partition, offset), None)
        if pushed is None or pushed == hash(value):
            return True
        MISMATCHED.inc()
        log.error("a topic record differs from the one pushed at its offset; applied",
                  extra={"topic": topic, "partition": partition, "offset": offset})
        return False


class Views(Protocol):
    """What a frame is applied to (perpline.api.readmodel.ReadModel)."""

    verified: Verified

    def physical(self, logical: str) -> str: ...

    def positions(self) -> dict[str, dict[int, int]]: ...

    def apply(self, logical: str, value: Any) -> bool: ...

    def apply_next_matcher_event(self, ev: Any) -> bool: ...


def apply_frame(rm: Views, frame: Frame) -> int:
    """Apply what can be applied of `frame` (the caller holds rm.apply_lock); the records applied."""
    if frame.topic == "account.events" and frame.partition != NO_OFFSET:
        return _by_offset(rm, frame)
    if frame.topic == "matcher.events":
        return _by_seq(rm, frame)
    if frame.topic == "funding.rounds":  # a round is applied once by its funding time (Prices.apply)
        rounds = [ev for ev in (decode_or_none(frame.topic, v, pushed=True) for v in frame.values) if ev is not None]
        for ev in rounds:
            rm.apply(frame.topic, ev)
        APPLIED.labels(frame.topic).inc(len(rounds))
        return len(rounds)
    return 0


def _by_offset(rm: Views, frame: Frame) -> int:
    topic = rm.physical(frame.topic)
    parts = rm.positions().get(topic)
    if parts is None or frame.partition not in parts or not frame.offsets:
        return 0
    position, applied = parts[frame.partition], 0
    first = frame.offsets[0]
    for offset, value in zip(frame.offsets, frame.values, strict=True):
        if offset < position:
            continue
        continues = offset == position or (offset == first and frame.clear_from != NO_OFFSET
                                           and frame.clear_from <= position)
        if not continues:
            LEFT.labels(frame.topic).inc(len(frame.offsets) - frame.offsets.index(offset))
            break
        decoded = decode_or_none(frame.topic, value, pushed=True)
        position = parts[frame.partition] = offset + 1
        rm.verified.remember(topic, frame.partition, offset, value)
        if decoded is not None:
            rm.apply(frame.topic, decoded)
            applied += 1
    APPLIED.labels(frame.topic).inc(applied)
    return applied


def _by_seq(rm: Views, frame: Frame) -> int:
    """Each symbol's events in order, up to its first one that is not its next seq (the rest of that
    symbol's are left to the topic; the other symbols' go on)."""
    applied, left, stopped = 0, 0, set()
    for value in frame.values:
        ev = decode_or_none(frame.topic, value, pushed=True)
        if ev is None or ev.symbol in stopped or not rm.apply_next_matcher_event(ev):
            left += 1
            if ev is not None:
                stopped.add(ev.symbol)
            continue
        applied += 1
    APPLIED.labels(frame.topic).inc(applied)
    LEFT.labels(frame.topic).inc(left)
    return applied


def decode_or_none(logical: str, value: bytes, **where: Any) -> Any:
    """A read-model record of topic `logical` decoded, or None (logged with `where` and skipped): the one
    rule for records the topic brings and records pushed."""
    try:
        return codec.decode(logical, value)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError) as exc:
        log.error("undecodable message skipped", extra={"topic": logical, **where, "error": str(exc)})
        return None
