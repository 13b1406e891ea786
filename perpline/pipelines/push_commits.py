"""Push an exactly-once processor's records of chosen topics the moment its transaction commits
(perpline.push). Before the commit nothing is sent: an aborted transaction's records are never shown.

The records' offsets come from the producer's delivery reports, which Quix serves on its own thread
before it commits (a checkpoint flushes the producer first). Per partition the writer remembers the
offset of the last record it pushed: when the next commit's first record follows it with at most its
own transaction marker in between, no other committed record can lie there, and the frame says so
(`clear_from`), so a reader that is exactly at that point can apply the frame.

Quix 3.28 has no public hook for delivery reports or commits; the wraps are on its own producer
instance (no class patched), as perpline.pipelines.checkpoints does for polls.
"""

from __future__ import annotations

from typing import Any

from quixstreams import Application

from perpline.push import NO_OFFSET, Frame, PushServer

MARKERS_PER_COMMIT = 1  # a committed transaction leaves one control record in each partition it wrote


class CommitPusher:
    """Collects the delivered records of `topics` (physical name -> logical name) for the open
    transaction and publishes them per partition once it commits; drops them when it aborts."""

    def __init__(self, server: PushServer, topics: dict[str, str]) -> None:
        self.server = server
        self.topics = topics
        self.pending: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
        self.last_pushed: dict[tuple[str, int], int] = {}

    def delivered(self, msg: Any) -> None:
        if msg.topic() in self.topics:
            self.pending.setdefault((msg.topic(), msg.partition()), []).append((msg.offset(), msg.value()))

    def aborted(self) -> None:
        self.pending.clear()
        self.last_pushed.clear()  # an aborted transaction may have taken offsets (Kafka): prove nothing

    def committed(self) -> None:
        pending, self.pending = self.pending, {}
        for (topic, partition), records in pending.items():
            records.sort()
            offsets = [offset for offset, _ in records]
            last = self.last_pushed.get((topic, partition))
            clear = last + 1 if last is not None and offsets[0] - last - 1 <= MARKERS_PER_COMMIT else NO_OFFSET
            self.last_pushed[(topic, partition)] = offsets[-1]
            self.server.publish(Frame(self.topics[topic], partition, clear, offsets, [v for _, v in records]))


def push_on_commit(app: Application, server: PushServer, topics: dict[str, str]) -> CommitPusher:
    """Wrap `app`'s producer so the records of `topics` are pushed when their transaction commits."""
    pusher = CommitPusher(server, topics)
    producer = app._producer  # noqa: SLF001 (no public hook in quixstreams 3.28)
    on_delivery, commit, abort = producer._on_delivery, producer.commit_transaction, producer.abort_transaction  # noqa: SLF001

    def delivered(err: Any, msg: Any) -> None:
        on_delivery(err, msg)
        if err is None:
            pusher.delivered(msg)

    def commit_transaction(*args: Any, **kwargs: Any) -> None:
        try:
            commit(*args, **kwargs)
        except BaseException:
            pusher.aborted()
            raise
        pusher.committed()

    def abort_transaction(*args: Any, **kwargs: Any) -> None:
        pusher.aborted()
        abort(*args, **kwargs)

    producer._on_delivery = delivered  # type: ignore[method-assign]  # noqa: SLF001
    producer.commit_transaction = commit_transaction  # type: ignore[method-assign]
    producer.abort_transaction = abort_transaction  # type: ignore[method-assign]
    return pusher
