"""Requests waiting, without polling, for the views to change: woken after each batch the read model applied."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

MAX_WAKEUPS = 100_000  # requests waiting for the views to change (each one's future, re-armed per change)


class Wakeups:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def wake_all(self) -> None:
        with self._lock:
            armed, self._armed = self._armed, []
        for loop, woken in armed:
            loop.call_soon_threadsafe(_wake, woken)

    async def wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `done()` holds: re-checked each time a batch was applied (a wakeup is armed before
        each re-check, so no change can slip between them)."""
        if done():  # the common case: nothing to arm
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            woken: asyncio.Future[None] = loop.create_future()
            with self._lock:
                armed = len(self._armed) < MAX_WAKEUPS
                if armed:
                    self._armed.append((loop, woken))
            if done():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:  # a full wakeup list falls back to a short sleep (bounded memory, never a stuck request)
                await asyncio.wait_for(woken, remaining) if armed else await asyncio.sleep(min(remaining, 0.005))
            except TimeoutError:
                return done()


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
