"""The accounts processor's decision on each command, correlated to the requests awaiting it.

Keyed by (account, request id): a request id (an Idempotency-Key) is the client's, unique per account
only. A result is stored and its waiters taken under one lock, so a request that registers between
the two can neither miss it nor be answered twice."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Iterable

from perpline.contracts import messages as m

MAX_RESULTS = 100_000

Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[m.CommandResult]]


class Results:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: OrderedDict[tuple[int, str], m.CommandResult] = OrderedDict()
        self._waiters: dict[tuple[int, str], list[Waiter]] = {}

    def record(self, result: m.CommandResult) -> None:
        """Keep a decision (the newest MAX_RESULTS) and answer whoever awaits it."""
        key = (result.account_id, result.request_id)
        with self._lock:
            self._results[key] = result
            while len(self._results) > MAX_RESULTS:
                self._results.popitem(last=False)
            waiters = self._waiters.pop(key, [])
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_set_result, fut, result)

    def values(self) -> Iterable[m.CommandResult]:
        """Every decision kept, oldest first: for a checkpoint, on the consumer thread (the only writer)."""
        return self._results.values()

    def restore(self, results: OrderedDict[tuple[int, str], m.CommandResult]) -> None:
        with self._lock:
            self._results = results

    def get(self, account_id: int, request_id: str) -> m.CommandResult | None:
        with self._lock:
            return self._results.get((account_id, request_id))

    async def wait(self, account_id: int, request_id: str, timeout_s: float) -> m.CommandResult | None:
        """The decision, once known; None if not within `timeout_s`."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[m.CommandResult] = loop.create_future()
        key = (account_id, request_id)
        with self._lock:
            known = self._results.get(key)
            if known is not None:
                return known
            self._waiters.setdefault(key, []).append((loop, fut))
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            with self._lock:
                waiters = self._waiters.get(key, [])
                if (loop, fut) in waiters:
                    waiters.remove((loop, fut))
                if not waiters:
                    self._waiters.pop(key, None)
            return None


def _set_result(fut: asyncio.Future[m.CommandResult], result: m.CommandResult) -> None:
    if not fut.done():
        fut.set_result(result)
