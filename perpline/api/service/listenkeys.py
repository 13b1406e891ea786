"""User-data stream keys, as Binance's USER_STREAM endpoints (served by perpline.api.listenkey, used by
the Binance websockets, perpline.api.fstream). One key per API key while it is active: opening again
returns the same key and extends it. A key is valid VALIDITY_MS after its last open or keep-alive,
but never expires while a socket is attached to it (ccxt.pro 4.5.90 renews at most once, so an
idle client would otherwise lose its stream); a socket keeps it at most MAX_ATTACHED_MS.

Keys live in this API process: a client keeps its private socket on the replica that issued the
key (the keys are not shared between replicas; a key unknown to a replica is refused there).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from perpline.contracts.codes import Code, PerplineError

VALIDITY_MS = 60 * 60 * 1000
MAX_ATTACHED_MS = 24 * 60 * 60 * 1000  # Binance ends every connection after 24 hours
MAX_KEYS = 100_000
KEY_CHARS = 64


@dataclass
class ListenKey:
    key: str
    api_key: str
    user_id: int
    expires_ms: int
    sockets: int = 0  # attached private sockets (perpline.api.fstream)


class ListenKeys:
    """The active keys of this process, by key and by API key; at most MAX_KEYS of them."""

    def __init__(self) -> None:
        self._by_key: dict[str, ListenKey] = {}
        self._by_api_key: dict[str, ListenKey] = {}
        self.on_end: Callable[[str], None] = lambda key: None  # told when a key ends (its sockets are closed)

    def open(self, api_key: str, user_id: int, now_ms: int) -> str:
        """The API key's active key, extended, or a new one."""
        self.expire(now_ms)
        found = self._by_api_key.get(api_key)
        if found is not None:
            found.expires_ms = now_ms + VALIDITY_MS
            return found.key
        if len(self._by_key) >= MAX_KEYS:
            raise PerplineError(Code.RATE_LIMITED, "too many user-data streams on this API process")
        entry = ListenKey(secrets.token_urlsafe(KEY_CHARS * 3 // 4), api_key, user_id, now_ms + VALIDITY_MS)
        self._by_key[entry.key] = self._by_api_key[api_key] = entry
        return entry.key

    def keep_alive(self, api_key: str, now_ms: int) -> str:
        self.expire(now_ms)
        found = self._by_api_key.get(api_key)
        if found is None:
            raise PerplineError(Code.UNKNOWN_LISTEN_KEY, "This listenKey does not exist.")
        found.expires_ms = now_ms + VALIDITY_MS
        return found.key

    def close(self, api_key: str, now_ms: int) -> None:
        self.expire(now_ms)
        found = self._by_api_key.get(api_key)
        if found is None:
            raise PerplineError(Code.UNKNOWN_LISTEN_KEY, "This listenKey does not exist.")
        self._end(found)

    def attach(self, key: str, now_ms: int) -> ListenKey | None:
        """The live key a socket attaches to (counted), or None for an unknown or expired one."""
        self.expire(now_ms)
        found = self._by_key.get(key)
        if found is not None:
            found.sockets += 1
        return found

    def detach(self, entry: ListenKey) -> None:
        entry.sockets = max(0, entry.sockets - 1)

    def expire(self, now_ms: int) -> None:
        """End the keys past their validity (an attached key lasts MAX_ATTACHED_MS after its last renewal)."""
        for entry in list(self._by_key.values()):
            limit_ms = entry.expires_ms + (MAX_ATTACHED_MS - VALIDITY_MS if entry.sockets else 0)
            if now_ms >= limit_ms:
                self._end(entry)

    def _end(self, entry: ListenKey) -> None:
        self._by_key.pop(entry.key, None)
        if self._by_api_key.get(entry.api_key) is entry:
            del self._by_api_key[entry.api_key]
        self.on_end(entry.key)
