"""The one builder of a dead.letters record, for every component that refuses an input.

The matcher, the Quix processors and the ledger sink all send what they can never process to
dead.letters, where an operator reads why and replays it by hand once the cause is fixed. So a
letter always says where the input was (topic, partition, offset: the causation id) and keeps
the input itself, both cut to a bound so that a huge input cannot make a huge letter.
"""

from __future__ import annotations

import time

from perpline.contracts import messages as m

MAX_PAYLOAD_BYTES = 10_000  # of the raw input kept in a letter
MAX_ERROR_CHARS = 1_000


def dead_letter(source: str, topic: str, partition: int, offset: int, raw: bytes | None, error: str,
                now_ms: int | None = None) -> m.DeadLetter:
    """The letter for the input at `topic` (the name on the broker) / `partition` / `offset`.

    partition and offset are -1 where the input's position is not known (a step run outside a
    consumer, as in unit tests). The payload is the raw input decoded as UTF-8 with replacement.
    """
    return m.DeadLetter(trace_id="", causation_id=f"{topic}:{partition}:{offset}",
                        ts_ms=int(time.time() * 1000) if now_ms is None else now_ms, source=source, topic=topic,
                        partition=partition, offset=offset, error=error[:MAX_ERROR_CHARS],
                        payload=(raw or b"")[:MAX_PAYLOAD_BYTES].decode("utf-8", "replace"))
