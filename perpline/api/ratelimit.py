"""Request weights per IP and per API key in one-minute windows, as Binance counts them.

Over the limit: 429 with Retry-After (seconds to the next window) and X-MBX-USED-WEIGHT-1M.
Counts live in this process: with N API replicas behind a balancer the effective limit is
about N times this one (documented; a shared counter would need a store we do not run).
"""

from __future__ import annotations

import threading
import time

from prometheus_client import Counter

IP_WEIGHT_PER_MIN = 6000
KEY_WEIGHT_PER_MIN = 2400
KEY_ORDERS_PER_MIN = 1200
MAX_TRACKED = 100_000
REJECTED = Counter("perpline_api_rate_limited_total", "requests refused with 429 by a rate limit", ["limit"])


class RateLimiter:
    def __init__(self, ip_limit: int = IP_WEIGHT_PER_MIN, key_limit: int = KEY_WEIGHT_PER_MIN,
                 order_limit: int = KEY_ORDERS_PER_MIN) -> None:
        self.limits = {"ip": ip_limit, "key": key_limit, "orders": order_limit}
        for kind in self.limits:
            REJECTED.labels(kind)  # exported from the start (at 0)
        self._window = 0
        self._used: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def charge(self, kind: str, who: str, weight: int, now_s: float | None = None) -> tuple[bool, int, int]:
        """(allowed, used weight in this window, seconds until the next window)."""
        now = time.time() if now_s is None else now_s
        window = int(now // 60)
        with self._lock:
            if window != self._window:
                self._window, self._used = window, {}
            if len(self._used) >= MAX_TRACKED and (kind, who) not in self._used:
                REJECTED.labels(kind).inc()
                return False, 0, 60 - int(now % 60)
            used = self._used.get((kind, who), 0) + weight
            allowed = used <= self.limits[kind]
            if allowed:
                self._used[(kind, who)] = used
            else:
                REJECTED.labels(kind).inc()
            return allowed, used, 60 - int(now % 60)
