"""A break must be a break: a rule's finding is reported only once the data it judged was complete.

Rules compare tables filled by different stages (matcher -> accounts -> ledger sink ->
ClickHouse). While a stage is down or behind, a trade can be in `matcher_events` before its legs are
in `ledger_postings`: that is lag, not a break. So each pass records the end of every topic of the
chain (a mark), and a later pass checks whether every stage's committed position has reached an
earlier mark (that mark is then "drained"). A finding first seen at pass N is reported when it is
found again at a pass M whose data is complete up to N: after CHAIN_DEPTH successive drains
(D(M) = the newest earlier pass drained at M; complete through D(D(D(M)))), whatever existed
upstream at pass N has gone through the matcher's publication, accounts and the sink. A finding that vanishes
before that was lag and is forgotten. A finding that cannot be confirmed for MAX_PENDING_PASSES
passes (a stage stuck, offsets unreadable) is reported as a `warning`, never as critical.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from perpline.recon.rules import Break

# The matcher's publication (an event and its settlement legs are delivered independently, and a matcher
# restarted between the two re-emits both), accounts, ledger sink: the stages between matching and ClickHouse.
CHAIN_DEPTH = 3
MAX_PENDING_PASSES = 120  # 10 min at the 5 s cadence: beyond it an unconfirmed finding becomes a warning
MAX_DRAIN_CHECKS = 3  # earlier marks tried per pass, newest first (each check may probe the broker)


class Progress(Protocol):
    """How far the pipeline is. `mark()`: the chain's topic ends now (None when unreadable);
    `drained(mark)`: whether every stage has consumed everything up to that mark."""

    def mark(self) -> Any: ...

    def drained(self, mark: Any) -> bool: ...


@dataclass(frozen=True)
class Pending:
    first_pass: int
    since_ms: int  # the since_ms of the pass that first found it: later passes look back that far


class Confirmer:
    """Bounded: marks and drain history for at most MAX_PENDING_PASSES + CHAIN_DEPTH passes; pending
    findings are those of the last pass only (at most MAX_BREAKS_PER_RULE per rule)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.pass_no = 0
        self.marks: dict[int, Any] = {}
        self.drained_at: dict[int, int] = {}  # pass -> the newest earlier pass drained then (0: none)
        self.pending: dict[tuple[Any, ...], Pending] = {}

    def since_floor(self, since_ms: int) -> int:
        """A pass must look back as far as its oldest pending finding's first pass did."""
        return min([since_ms, *(p.since_ms for p in self.pending.values())])

    def begin_pass(self) -> None:
        self.pass_no += 1
        if self.progress is None:
            return
        self.drained_at[self.pass_no] = self._newest_drained()
        mark = self.progress.mark()
        if mark is not None:
            self.marks[self.pass_no] = mark
        oldest = self.pass_no - MAX_PENDING_PASSES - CHAIN_DEPTH
        for table in (self.marks, self.drained_at):
            for old in [n for n in table if n < oldest]:
                del table[old]

    def _newest_drained(self) -> int:
        """D(this pass): drains only grow (committed positions only advance), so it is at least D(previous)."""
        known = self.drained_at.get(self.pass_no - 1, 0)
        assert self.progress is not None
        for n in sorted((n for n in self.marks if n > known), reverse=True)[:MAX_DRAIN_CHECKS]:
            if self.progress.drained(self.marks[n]):
                return n
        return known

    def complete_through(self) -> int:
        """The newest pass whose upstream data has surely reached ClickHouse by now (0: none)."""
        n = self.pass_no
        for _ in range(CHAIN_DEPTH):
            n = self.drained_at.get(n, 0)
            if n == 0:
                return 0
        return n

    def judge(self, found: list[Break], since_ms: int) -> list[Break]:
        """The findings of this pass -> the breaks to report. Without a Progress (a one-off pass) every
        finding is reported at once: the caller judges the moment."""
        if self.progress is None:
            return found
        complete = self.complete_through()
        pending: dict[tuple[Any, ...], Pending] = {}
        out: list[Break] = []
        for b in found:
            seen = self.pending.get(b.key())
            if seen is None:
                pending[b.key()] = Pending(self.pass_no, since_ms)
            elif seen.first_pass <= complete:
                out.append(b)  # still there once the data it judged was complete: a break
                pending[b.key()] = seen
            elif self.pass_no - seen.first_pass >= MAX_PENDING_PASSES:
                out.append(replace(b, severity="warning",
                                   detail=f"unconfirmed: the pipeline has not caught up for {MAX_PENDING_PASSES} "
                                          f"passes; {b.detail}"))
                pending[b.key()] = seen
            else:
                pending[b.key()] = seen
        self.pending = pending
        return out
