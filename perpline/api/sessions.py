"""Web sessions (/api/v1/auth): sign up with a login and password, log in for a short-lived JWT,
refresh it, log out. Users and sessions are records on auth.keys like API keys, so every API
replica sees a logout at once. Trading endpoints accept `Authorization: Bearer <access token>`
wherever they accept a signed request (perpline.api.v1._identify).

Logins are limited per login and per client address (perpline.auth.throttle: a few free failures,
then lockouts that double, 429 LOGIN_LOCKED with Retry-After); scrypt runs in a small bounded pool
that refuses (429 RATE_LIMITED) rather than queues. A refresh is decided by the log: its
SessionStarted names the session it replaces, and of two refreshes with one token only the first
on auth.keys starts a session, on every replica (perpline.auth.registry); the other gets BAD_TOKEN.
"""

from __future__ import annotations

import hmac
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, StrictStr

from perpline.api import errors
from perpline.api.app import ApiDeps
from perpline.api.clientip import client_ip
from perpline.auth import passwords, sessions, throttle
from perpline.contracts import messages as m
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.ids import new_request_id

router = APIRouter(prefix="/api/v1/auth", tags=["sessions"], responses=errors.documented(*errors.COMMON_ERRORS))
LOGIN_RE = re.compile(r"[A-Za-z0-9._@+-]{3,64}")  # fullmatch: `$` would take a final newline
VISIBLE_S = 5.0  # how long to wait for this replica to see a record it just wrote
UNKNOWN_SESSION_WAIT_S = 1.0  # a session started on another replica a moment ago may still be on its way
_DUMMY_HASH = passwords.hash_password("not a password of anyone")


def _deps(request: Request) -> ApiDeps:
    found: ApiDeps = request.app.state.deps
    return found


Deps = Annotated[ApiDeps, Depends(_deps)]


class Credentials(BaseModel):
    login: StrictStr = Field(min_length=3, max_length=64, description="letters, digits and . _ @ + -")
    password: StrictStr = Field(min_length=passwords.MIN_PASSWORD_CHARS, max_length=passwords.MAX_PASSWORD_CHARS)


class RefreshBody(BaseModel):
    refresh_token: StrictStr = Field(min_length=10, max_length=256)


async def _hashed(request: Request, d: ApiDeps, fn: Any, *args: str) -> Any:
    """fn(*args) (scrypt) on the bounded hashing pool; 429 at once when it is full."""
    try:
        return await d.hashes.run(fn, *args)
    except throttle.PoolBusy as err:
        request.state.retry_after = 1
        raise PerplineError(Code.RATE_LIMITED, "too many logins in progress; retry in a second") from err


def _refuse_if_locked(request: Request, d: ApiDeps, login: str, ip: str) -> None:
    wait_s = d.logins.retry_after_s(login, ip)
    if wait_s > 0:
        request.state.retry_after = wait_s
        raise PerplineError(Code.LOGIN_LOCKED, f"too many failed logins; retry in {wait_s} s")


def _meta(request: Request, cause: str) -> dict[str, Any]:
    return {"trace_id": request.state.trace_id, "causation_id": cause, "ts_ms": int(time.time() * 1000)}


async def _until(d: ApiDeps, done: Any, timeout_s: float = VISIBLE_S) -> bool:
    """Wait until this replica's registry shows what `done` looks for (woken as records are applied)."""
    if d.readmodel is None:
        raise PerplineError(Code.BROKER_UNAVAILABLE, "user registry not loaded")
    return await d.readmodel.wait_until(done, timeout_s)


def _registry(d: ApiDeps) -> Any:
    if d.registry is None:
        raise PerplineError(Code.BROKER_UNAVAILABLE, "user registry not loaded")
    return d.registry


@router.post("/signup")
async def signup(body: Credentials, request: Request, d: Deps) -> Any:
    """A new user with a login and password (no money: deposits come from the wallet side)."""
    if LOGIN_RE.fullmatch(body.login) is None:
        raise PerplineError(Code.MALFORMED, "login: 3 to 64 letters, digits or . _ @ + -")
    registry = _registry(d)
    if registry.login(body.login) is not None:
        raise PerplineError(Code.LOGIN_TAKEN, f"login {body.login!r} is taken")
    password_hash = await _hashed(request, d, passwords.hash_password, body.password)
    rid = new_request_id()
    await d.send("auth.keys", "user", m.UserRegistered(**_meta(request, rid), request_id=rid, login=body.login,
                                                    password_hash=password_hash, label=body.login))
    if not await _until(d, lambda: rid in registry.registered):
        raise PerplineError(Code.TIMEOUT, "the registration was sent but is not visible yet; try logging in")
    user_id = registry.registered[rid]
    found = registry.login(body.login)
    if found is None or found[0] != user_id:  # another sign-up with this login landed first
        raise PerplineError(Code.LOGIN_TAKEN, f"login {body.login!r} is taken")
    return {"user_id": user_id, "login": body.login}


@router.post("/login")
async def login(body: Credentials, request: Request, d: Deps) -> Any:
    """A session for a login and password. While the login or the address is locked out (too many
    failures) every attempt, the right password included, gets 429 LOGIN_LOCKED."""
    registry = _registry(d)
    ip = client_ip(request)
    _refuse_if_locked(request, d, body.login, ip)
    found = registry.login(body.login)
    stored = found[1] if found is not None else _DUMMY_HASH  # the same work either way: no login probing by time
    ok = await _hashed(request, d, passwords.verify_password, body.password, stored)
    if found is None or not ok:
        d.logins.failed(body.login, ip)
        raise PerplineError(Code.BAD_CREDENTIALS, "login or password is wrong")
    d.logins.succeeded(body.login)
    return await _start_session(request, d, found[0])


@router.post("/refresh")
async def refresh(body: RefreshBody, request: Request, d: Deps) -> Any:
    """A new access token and a new refresh token; the old session ends (rotation). Exactly one of
    concurrent refreshes with one token wins, whichever replicas serve them."""
    registry = _registry(d)
    session = registry.session(sessions.session_of(body.refresh_token))
    now_ms = int(time.time() * 1000)
    if (session is None or session.ended or session.expires_ms <= now_ms
            or not hmac.compare_digest(session.refresh_hash, sessions.refresh_hash(body.refresh_token))):
        raise PerplineError(Code.BAD_TOKEN, "refresh token is invalid, expired or already used")
    return await _start_session(request, d, session.user_id, replaces=session.session_id)


@router.post("/logout")
async def logout(request: Request, d: Deps) -> Any:
    claims = await bearer_claims(request, d)
    await _end_session(request, d, claims.session_id, claims.user_id)
    return {"ok": True}


@router.get("/me")
async def me(request: Request, d: Deps) -> Any:
    claims = await bearer_claims(request, d)
    return {"user_id": claims.user_id, "login": _registry(d).users.get(claims.user_id, ""),
            "expires_s": claims.expires_s}


async def _start_session(request: Request, d: ApiDeps, user_id: int, replaces: str = "") -> dict[str, Any]:
    """Publish a SessionStarted and wait until this replica applied it. A refresh (`replaces`) waits
    until the replaced session has ended: by our record (then ours is live) or by another refresh or
    a logout first on the log (then ours never starts: BAD_TOKEN)."""
    session_id = sessions.new_session_id()
    refresh_token = sessions.new_refresh_token(session_id)
    expires_ms = int(time.time() * 1000) + sessions.REFRESH_TTL_S * 1000
    await d.send("auth.keys", str(user_id), m.SessionStarted(
        **_meta(request, f"session:{session_id}"), session_id=session_id, user_id=user_id,
        refresh_hash=sessions.refresh_hash(refresh_token), expires_ms=expires_ms, replaces=replaces))
    registry = _registry(d)
    if not replaces:
        await _until(d, lambda: registry.session(session_id) is not None)
    elif not await _until(d, lambda: registry.session(session_id) is not None
                          or (old := registry.session(replaces)) is None or old.ended):
        raise PerplineError(Code.TIMEOUT, "the refresh was sent but is not decided yet; retry it")
    elif registry.session(session_id) is None:  # decided once the old session ended: ours started, or never will
        raise PerplineError(Code.BAD_TOKEN, "refresh token is invalid, expired or already used")
    access, expires_s = sessions.issue(sessions.signing_key(d.secret_key), user_id, session_id)
    return {"access_token": access, "token_type": "Bearer", "expires_in": sessions.ACCESS_TTL_S,
            "expires_s": expires_s, "refresh_token": refresh_token, "user_id": user_id}


async def _end_session(request: Request, d: ApiDeps, session_id: str, user_id: int) -> None:
    await d.send("auth.keys", str(user_id), m.SessionEnded(**_meta(request, f"logout:{session_id}"), session_id=session_id,
                                                     user_id=user_id))
    registry = _registry(d)
    await _until(d, lambda: (found := registry.session(session_id)) is None or found.ended)


async def bearer_claims(request: Request, d: ApiDeps) -> sessions.Claims:
    """The caller's session from `Authorization: Bearer <access token>`: signature, expiry, and a
    session that has not ended."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise PerplineError(Code.UNAUTHORIZED, "Authorization: Bearer <access token> required")
    return await token_claims(d, header[7:].strip())


async def token_claims(d: ApiDeps, token: str) -> sessions.Claims:
    """An access token's session: signature, expiry, and a session that has not ended."""
    try:
        claims = sessions.verify(sessions.signing_key(d.secret_key), token)
    except sessions.TokenError as err:
        raise PerplineError(Code.BAD_TOKEN, str(err)) from err
    registry = _registry(d)
    await _until(d, lambda: registry.session(claims.session_id) is not None, UNKNOWN_SESSION_WAIT_S)
    session = registry.session(claims.session_id)
    if session is None or session.ended or session.user_id != claims.user_id:
        raise PerplineError(Code.BAD_TOKEN, "the session has ended; log in again")
    return claims


def session_live(d: ApiDeps, claims: sessions.Claims) -> bool:
    """The session is still open (no logout, no refresh replaced it) and its token not expired."""
    found = _registry(d).session(claims.session_id)
    return found is not None and not found.ended and claims.expires_s > time.time()
