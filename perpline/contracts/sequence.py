"""The one rule for consuming matcher.events: drop any `seq` already applied, report gaps.

The matcher may re-emit events after a crash (the WAL tail is replayed); every consumer
keeps the last applied seq per symbol and passes each event through `accept`.
"""

from __future__ import annotations

from dataclasses import dataclass

ACCEPT = 0
DUPLICATE = 1
GAP = 2  # accepted, but events were missing before it: a bug or lost data, alarm


@dataclass(frozen=True)
class Verdict:
    kind: int
    last_seq: int  # the last applied seq after this event

    @property
    def apply(self) -> bool:
        return self.kind != DUPLICATE


def accept(last_seq: int, seq: int) -> Verdict:
    """Given the last applied seq of a symbol (0 = none), decide what to do with `seq`."""
    assert seq > 0 and last_seq >= 0
    if seq <= last_seq:
        return Verdict(DUPLICATE, last_seq)
    return Verdict(ACCEPT if seq == last_seq + 1 else GAP, seq)
