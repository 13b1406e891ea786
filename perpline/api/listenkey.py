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

from typing import Any

from fastapi import APIRouter, Request

from perpline.api import auth, errors, models, ratelimit
from perpline.api.deps import now_ms
from perpline.api.models import ok
from perpline.api.service.listenkeys import ListenKeys
from perpline.contracts.codes import Code, PerplineError

router = APIRouter(prefix="/fapi", tags=["binance usd-m"], responses=errors.documented(*errors.COMMON_ERRORS))


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


@router.post("/v1/listenKey", responses=ok(models.ListenKey))
async def create_listen_key(request: Request) -> Any:
    caller = await _caller(request)
    assert caller.api_key is not None
    return {"listenKey": keys_of(request).open(caller.api_key, caller.user_id, now_ms())}


@router.put("/v1/listenKey", responses=ok(models.ListenKey))
async def keep_alive_listen_key(request: Request) -> Any:
    caller = await _caller(request)
    assert caller.api_key is not None
    return {"listenKey": keys_of(request).keep_alive(caller.api_key, now_ms())}


@router.delete("/v1/listenKey", responses=ok(models.Empty))
async def delete_listen_key(request: Request) -> Any:
    caller = await _caller(request)
    assert caller.api_key is not None
    keys_of(request).close(caller.api_key, now_ms())
    return {}
