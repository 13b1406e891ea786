"""Reading a batch from a confluent-kafka consumer without paying its timeout on every call.

`Consumer.consume(n, timeout)` waits until n messages arrived or the timeout passed, so a
consumer that asks for big batches adds the whole timeout to every quiet hop. `poll_batch`
blocks for the first message only, then takes whatever else is already there.
"""

from __future__ import annotations

from typing import Any


def poll_batch(consumer: Any, max_messages: int, timeout_s: float) -> list[Any]:
    assert max_messages >= 1
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    rest = consumer.consume(max_messages - 1, timeout=0) if max_messages > 1 else []
    return [first, *rest]
