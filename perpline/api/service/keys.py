"""API keys: issue, list and revoke, decided by the log (auth.keys). Issued and revoked by the owner
(a web session, or the trusted demo header) or by a key holding manage_keys, which never grants or
revokes more than it holds (perpline.auth.registry.may_grant); a replay of the signed request that
asked is refused on every replica (its nonce)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from fastapi import Request

from perpline.api.deps import ApiDeps, meta
from perpline.auth.registry import KeyRecord, may_grant
from perpline.contracts import messages as m
from perpline.contracts.codes import Code, PerplineError

KEY_VISIBLE_S = 5.0
NOT_YOURS = "Invalid API-key, IP, or permissions for action."


@dataclass(frozen=True)
class KeyManager:
    """Who asks to issue or revoke a key: the user, the key it signed with ("" for the owner: a web
    session or the trusted demo header), what it may grant, and the request's one-use nonce."""

    user_id: int
    api_key: str
    permissions: tuple[str, ...]
    nonce: str


def _check_grant(who: KeyManager, permissions: Any) -> None:
    if who.api_key and not may_grant(who.permissions, permissions):
        raise PerplineError(Code.BAD_API_KEY, f"{NOT_YOURS} A key may only grant or revoke permissions it holds.")


async def issue(d: ApiDeps, request: Request, who: KeyManager, permissions: Sequence[str], label: str) -> tuple[str, str]:
    """A new API key for the caller: (api key, secret); the secret exists in this answer only (stored
    encrypted)."""
    from perpline.auth import crypto  # noqa: PLC0415

    _check_grant(who, permissions)
    api_key, secret = crypto.new_api_key(), crypto.new_api_secret()
    issued = m.ApiKeyIssued(**meta(request, f"key:{api_key[:8]}"), api_key=api_key, user_id=who.user_id,
                            secret_enc=crypto.encrypt(d.secret_key, secret), permissions=list(permissions),  # type: ignore[arg-type]
                            label=label, nonce=who.nonce, issued_by=who.api_key)
    await _decided(d, request, str(who.user_id), issued, who.nonce)
    if d.registry is None or d.registry.get(api_key) is None:  # the issuing key lost its rights meanwhile
        raise PerplineError(Code.BAD_API_KEY, NOT_YOURS)
    return api_key, secret


def keys_of(d: ApiDeps, user_id: int) -> list[KeyRecord]:
    return list(d.registry.keys_of(user_id)) if d.registry is not None else []


async def revoke(d: ApiDeps, request: Request, who: KeyManager, api_key: str) -> None:
    """Revoke one of the caller's keys: the owner, or a key with manage_keys holding every permission
    of the key it revokes (itself included)."""
    found = d.registry.get(api_key) if d.registry is not None else None
    if found is None or found.user_id != who.user_id:
        raise PerplineError(Code.BAD_API_KEY, "no such key of yours")
    _check_grant(who, found.permissions)
    revoked = m.ApiKeyRevoked(**meta(request, f"revoke:{api_key[:8]}"), api_key=api_key, user_id=who.user_id,
                              nonce=who.nonce, revoked_by=who.api_key)
    await _decided(d, request, str(who.user_id), revoked, who.nonce)
    if not found.revoked:
        raise PerplineError(Code.BAD_API_KEY, NOT_YOURS)


async def _decided(d: ApiDeps, request: Request, key: str, record: msgspec.Struct, nonce: str) -> None:
    """Publish a key record and wait until this replica has applied the record that took `nonce`:
    ours, or (a replay of this signed request, on any replica) another one, then REPLAYED_REQUEST
    and ours changes nothing anywhere."""
    registry = d.registry
    if registry is None:
        raise PerplineError(Code.BROKER_UNAVAILABLE, "key registry not loaded")
    if registry.nonce_winner(nonce) is None:
        await d.send("auth.keys", key, record)
        if not await d.rm().wait_until(lambda: registry.nonce_winner(nonce) is not None, KEY_VISIBLE_S):
            raise PerplineError(Code.TIMEOUT, "the key change is not visible yet; retry the read shortly")
    if registry.nonce_winner(nonce) != request.state.trace_id:
        raise PerplineError(Code.REPLAYED_REQUEST, "this signed request was already received")
