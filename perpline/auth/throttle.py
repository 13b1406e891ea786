"""Brute-force limits for password logins, and the bounded pool that runs scrypt.

LoginLimiter: each login and each client IP may fail FREE_FAILURES_PER_LOGIN / FREE_FAILURES_PER_IP
times for free; every failure after that locks it out for twice as long as the one before
(FIRST_LOCKOUT_S, 2x, 4x, ... up to max_lockout_s). While locked, attempts are refused at once
(no password check, so they neither cost scrypt time nor count). A successful login clears that
login's failures (not the IP's: one's own account must not reset a password-spraying IP). An entry
is forgotten FORGET_AFTER_S after its last failure; at most MAX_TRACKED entries, the least recently
failing dropped first. Counts live in one API process, like the request-weight limits (with N
replicas an attacker gets at most N times the attempts).

HashPool: scrypt takes ~40 ms of CPU and 16 MiB; it runs in HASH_WORKERS threads with at most
HASH_QUEUE more requests waiting. A flood beyond that is refused at once (the caller answers 429)
instead of queueing, so it cannot take the CPU from, or hold memory against, order answers.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

FREE_FAILURES_PER_LOGIN = 5
FREE_FAILURES_PER_IP = 20  # many users may share one address (NAT, an office)
FIRST_LOCKOUT_S = 1.0
MAX_LOCKOUT_S = 900.0
FORGET_AFTER_S = 3600.0
MAX_TRACKED = 100_000
HASH_WORKERS = 2
HASH_QUEUE = 8

T = TypeVar("T")


@dataclass
class _Failures:
    count: int = 0
    last_s: float = 0.0
    locked_until_s: float = 0.0


class LoginLimiter:
    def __init__(self, free_per_login: int = FREE_FAILURES_PER_LOGIN, free_per_ip: int = FREE_FAILURES_PER_IP,
                 first_lockout_s: float = FIRST_LOCKOUT_S, max_lockout_s: float = MAX_LOCKOUT_S,
                 max_tracked: int = MAX_TRACKED) -> None:
        self._free = {"login": free_per_login, "ip": free_per_ip}
        self._first_s, self._max_s, self._max_tracked = first_lockout_s, max_lockout_s, max_tracked
        self._entries: OrderedDict[tuple[str, str], _Failures] = OrderedDict()  # least recently failing first
        self._lock = threading.Lock()

    def retry_after_s(self, login: str, ip: str, now_s: float | None = None) -> int:
        """Whole seconds until this login from this IP may be tried again; 0: now."""
        now = time.monotonic() if now_s is None else now_s
        with self._lock:
            until = max((e.locked_until_s for k in (("login", login), ("ip", ip)) if (e := self._entries.get(k))),
                        default=0.0)
        return max(0, math.ceil(until - now))

    def failed(self, login: str, ip: str, now_s: float | None = None) -> None:
        now = time.monotonic() if now_s is None else now_s
        with self._lock:
            self._forget(now)
            for key in (("login", login), ("ip", ip)):
                entry = self._entries.pop(key, None) or _Failures()
                entry.count, entry.last_s = entry.count + 1, now
                beyond = entry.count - self._free[key[0]]
                if beyond > 0:
                    entry.locked_until_s = now + min(self._max_s, self._first_s * 2 ** min(beyond - 1, 32))
                self._entries[key] = entry
            while len(self._entries) > self._max_tracked:
                self._entries.popitem(last=False)

    def succeeded(self, login: str) -> None:
        with self._lock:
            self._entries.pop(("login", login), None)

    def _forget(self, now: float) -> None:
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.last_s > now - FORGET_AFTER_S:
                return
            self._entries.popitem(last=False)


class PoolBusy(Exception):
    """Every hashing worker is busy and the queue is full: answer 'try again' at once."""


class HashPool:
    def __init__(self, workers: int = HASH_WORKERS, queue: int = HASH_QUEUE) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scrypt")
        self._slots = threading.BoundedSemaphore(workers + queue)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) on a hashing worker; PoolBusy at once when workers and queue are all taken."""
        if not self._slots.acquire(blocking=False):
            raise PoolBusy
        future = self._executor.submit(fn, *args)
        future.add_done_callback(lambda _: self._slots.release())  # held until the hash ends, even if the caller left
        return await asyncio.wrap_future(future)
