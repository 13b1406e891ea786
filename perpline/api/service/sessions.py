"""Web sessions: sign up with a login and password, log in for a short-lived JWT, refresh it, log
out. Users and sessions are records on auth.keys like API keys, so every API replica sees a logout
at once. Every surface that takes a session (the native REST API's Bearer header, the account
websocket's token) checks it here.

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
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from perpline.api.clientip import client_ip
from perpline.api.deps import ApiDeps, meta
from perpline.auth import passwords, sessions, throttle
from perpline.auth.registry import KeyRegistry
from perpline.contracts import messages as m
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.ids import new_request_id

LOGIN_RE = re.compile(r"[A-Za-z0-9._@+-]{3,64}")  # fullmatch: `$` would take a final newline
VISIBLE_S = 5.0  # how long to wait for this replica to see a record it just wrote
UNKNOWN_SESSION_WAIT_S = 1.0  # a session started on another replica a moment ago may still be on its way
_DUMMY_HASH = passwords.hash_password("not a password of anyone")


@dataclass(frozen=True)
class Session:
    access_token: str
    expires_s: int
    refresh_token: str
    user_id: int


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


async def until(d: ApiDeps, done: Any, timeout_s: float = VISIBLE_S) -> bool:
    """Wait until this replica's registry shows what `done` looks for (woken as records are applied)."""
    if d.readmodel is None:
        raise PerplineError(Code.BROKER_UNAVAILABLE, "user registry not loaded")
    return await d.readmodel.wait_until(done, timeout_s)


def registry(d: ApiDeps) -> KeyRegistry:
    if d.registry is None:
        raise PerplineError(Code.BROKER_UNAVAILABLE, "user registry not loaded")
    return d.registry


async def signup(d: ApiDeps, request: Request, login: str, password: str) -> int:
    """A new user with a login and password (no money: deposits come from the wallet side); its id."""
    if LOGIN_RE.fullmatch(login) is None:
        raise PerplineError(Code.MALFORMED, "login: 3 to 64 letters, digits or . _ @ + -")
    users = registry(d)
    if users.login(login) is not None:
        raise PerplineError(Code.LOGIN_TAKEN, f"login {login!r} is taken")
    password_hash = await _hashed(request, d, passwords.hash_password, password)
    rid = new_request_id()
    await d.send("auth.keys", "user", m.UserRegistered(**meta(request, rid), request_id=rid, login=login,
                                                    password_hash=password_hash, label=login))
    if not await until(d, lambda: rid in users.registered):
        raise PerplineError(Code.TIMEOUT, "the registration was sent but is not visible yet; try logging in")
    user_id = users.registered[rid]
    found = users.login(login)
    if found is None or found[0] != user_id:  # another sign-up with this login landed first
        raise PerplineError(Code.LOGIN_TAKEN, f"login {login!r} is taken")
    return user_id


async def login(d: ApiDeps, request: Request, login: str, password: str) -> Session:
    """A session for a login and password. While the login or the address is locked out (too many
    failures) every attempt, the right password included, gets 429 LOGIN_LOCKED."""
    users = registry(d)
    ip = client_ip(request)
    _refuse_if_locked(request, d, login, ip)
    found = users.login(login)
    stored = found[1] if found is not None else _DUMMY_HASH  # the same work either way: no login probing by time
    ok = await _hashed(request, d, passwords.verify_password, password, stored)
    if found is None or not ok:
        d.logins.failed(login, ip)
        raise PerplineError(Code.BAD_CREDENTIALS, "login or password is wrong")
    d.logins.succeeded(login)
    return await _start(request, d, found[0])


async def refresh(d: ApiDeps, request: Request, refresh_token: str) -> Session:
    """A new access token and a new refresh token; the old session ends (rotation). Exactly one of
    concurrent refreshes with one token wins, whichever replicas serve them."""
    session = registry(d).session(sessions.session_of(refresh_token))
    now_ms = int(time.time() * 1000)
    if (session is None or session.ended or session.expires_ms <= now_ms
            or not hmac.compare_digest(session.refresh_hash, sessions.refresh_hash(refresh_token))):
        raise PerplineError(Code.BAD_TOKEN, "refresh token is invalid, expired or already used")
    return await _start(request, d, session.user_id, replaces=session.session_id)


async def logout(d: ApiDeps, request: Request) -> None:
    claims = await bearer_claims(request, d)
    await d.send("auth.keys", str(claims.user_id), m.SessionEnded(
        **meta(request, f"logout:{claims.session_id}"), session_id=claims.session_id, user_id=claims.user_id))
    users = registry(d)
    await until(d, lambda: (found := users.session(claims.session_id)) is None or found.ended)


def login_of(d: ApiDeps, user_id: int) -> str:
    return registry(d).users.get(user_id, "")


async def _start(request: Request, d: ApiDeps, user_id: int, replaces: str = "") -> Session:
    """Publish a SessionStarted and wait until this replica applied it. A refresh (`replaces`) waits
    until the replaced session has ended: by our record (then ours is live) or by another refresh or
    a logout first on the log (then ours never starts: BAD_TOKEN)."""
    session_id = sessions.new_session_id()
    refresh_token = sessions.new_refresh_token(session_id)
    expires_ms = int(time.time() * 1000) + sessions.REFRESH_TTL_S * 1000
    await d.send("auth.keys", str(user_id), m.SessionStarted(
        **meta(request, f"session:{session_id}"), session_id=session_id, user_id=user_id,
        refresh_hash=sessions.refresh_hash(refresh_token), expires_ms=expires_ms, replaces=replaces))
    users = registry(d)
    if not replaces:
        await until(d, lambda: users.session(session_id) is not None)
    elif not await until(d, lambda: users.session(session_id) is not None
                         or (old := users.session(replaces)) is None or old.ended):
        raise PerplineError(Code.TIMEOUT, "the refresh was sent but is not decided yet; retry it")
    elif users.session(session_id) is None:  # decided once the old session ended: ours started, or never will
        raise PerplineError(Code.BAD_TOKEN, "refresh token is invalid, expired or already used")
    access, expires_s = sessions.issue(sessions.signing_key(d.secret_key), user_id, session_id)
    return Session(access, expires_s, refresh_token, user_id)


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
    users = registry(d)
    await until(d, lambda: users.session(claims.session_id) is not None, UNKNOWN_SESSION_WAIT_S)
    session = users.session(claims.session_id)
    if session is None or session.ended or session.user_id != claims.user_id:
        raise PerplineError(Code.BAD_TOKEN, "the session has ended; log in again")
    return claims


def session_live(d: ApiDeps, claims: sessions.Claims) -> bool:
    """The session is still open (no logout, no refresh replaced it) and its token not expired."""
    found = registry(d).session(claims.session_id)
    return found is not None and not found.ended and claims.expires_s > time.time()
