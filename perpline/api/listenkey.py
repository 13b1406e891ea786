"""User-data stream keys, as Binance's USER_STREAM endpoints: POST/PUT/DELETE /fapi/v1/listenKey.

Authenticated by the API key alone (X-MBX-APIKEY, no timestamp and no signature: Binance's rule,
and what ccxt.pro sends). One key per API key while it is active: a POST returns the same key and
extends it, a PUT extends it, a DELETE ends it. A key is valid VALIDITY_MS after its last POST or
PUT, but never expires while a socket is attached to it (ccxt.pro 4.5.90 renews at most once, so an
idle client would otherwise lose its stream); a socket keeps it at most MAX_ATTACHED_MS.

Keys live in this API process: a client keeps its private socket on the replica that issued the
key (the keys are not shared between replicas; a key unknown to a replica is refused there).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request

from perpline.api import auth, errors, ratelimit
from perpline.contracts.codes import Code, PerplineError

router = APIRouter(prefix="/fapi", tags=["binance usd-m"], responses=errors.documented(*errors.COMMON_ERRORS))
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


def keys_of(request: Request) -> ListenKeys:
    keys: ListenKeys = request.app.state.listen_keys
    return keys


async def _caller(request: Request) -> auth.Caller:
    """The API key's owner, charged the route's weight: a known, unrevoked key with read permission."""
    d = request.app.state.deps
    api_key = request.headers.get(auth.API_KEY_HEADER)
    if not api_key:
        raise PerplineError(Code.UNAUTHORIZED, "API-key format invalid.")
    record = await auth._lookup(d.registry, api_key)  # noqa: SLF001 (the same lookup as a signed request)
    if record is None or record.revoked or auth.READ not in record.permissions:
        raise PerplineError(Code.BAD_API_KEY, "Invalid API-key, IP, or permissions for action.")
    ratelimit.charge_caller(request, api_key, record.user_id)
    return auth.Caller(record.user_id, api_key, {}, record.permissions)


def _now_ms() -> int:
    return int(time.time() * 1000)


@router.post("/v1/listenKey")
async def create_listen_key(request: Request) -> Any:
    caller = await _caller(request)
    assert caller.api_key is not None
    return {"listenKey": keys_of(request).open(caller.api_key, caller.user_id, _now_ms())}


@router.put("/v1/listenKey")
async def keep_alive_listen_key(request: Request) -> Any:
    caller = await _caller(request)
    assert caller.api_key is not None
    return {"listenKey": keys_of(request).keep_alive(caller.api_key, _now_ms())}


@router.delete("/v1/listenKey")
async def delete_listen_key(request: Request) -> Any:
    caller = await _caller(request)
    assert caller.api_key is not None
    keys_of(request).close(caller.api_key, _now_ms())
    return {}
