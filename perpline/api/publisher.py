"""The API's one producer: a request awaits the broker's acknowledgement of its own record.

Before, a request produced and then flushed the whole producer (every other request's records
included) on a worker thread. Now each record carries a delivery callback that resolves the
request's future on its event loop, and one thread serves the producer's callbacks. A request
that cannot be queued (the producer's queue is full) or is not acknowledged in time is refused
with BROKER_UNAVAILABLE; it was then never acknowledged, so the client may resend it under the
same Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, Producer

from perpline.contracts.codes import Code, PerplineError

POLL_S = 0.1  # the callback thread's longest sleep; it wakes at once for a delivery
MAX_QUEUED_RECORDS = 100_000  # records waiting for the broker (librdkafka's own bound)


class Publisher:
    def __init__(self, config: dict[str, Any]) -> None:
        self.producer = Producer({**config, "queue.buffering.max.messages": MAX_QUEUED_RECORDS})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="publisher", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(POLL_S)

    async def send(self, topic: str, key: bytes, value: bytes, timeout_s: float) -> None:
        """Produce one record and wait until the broker acknowledged it (bounded by timeout_s)."""
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[None] = loop.create_future()

        def delivered(err: KafkaError | None, _record: Any) -> None:
            loop.call_soon_threadsafe(_settle, acked, err)

        try:
            self.producer.produce(topic, key=key, value=value, on_delivery=delivered)
        except BufferError as exc:
            raise PerplineError(Code.BROKER_UNAVAILABLE, "too many commands waiting for the broker") from exc
        try:
            await asyncio.wait_for(acked, timeout_s)
        except TimeoutError as exc:
            raise PerplineError(Code.BROKER_UNAVAILABLE, "the broker did not acknowledge the command in time") from exc

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        self.producer.flush(timeout_s)


def _settle(acked: asyncio.Future[None], err: KafkaError | None) -> None:
    if acked.done():  # timed out meanwhile: the request was already answered
        return
    if err is None:
        acked.set_result(None)
    else:
        acked.set_exception(PerplineError(Code.BROKER_UNAVAILABLE, f"the broker refused the command: {err}"))
