"""Users and API keys, rebuilt from the auth.keys topic (event-sourced like everything else).

Why a topic: every API replica needs the same keys, issuing and revoking must reach them all
within moments, and the broker is already the system of record; no extra database to run.
A user's id is USER_ID_BASE + the offset of its UserRegistered record (unique without locks).

Every replica applies the same records in the same (offset) order, so every rule decided here is
decided the same way on every replica, with no lock between them:
- one-use requests: a key issue or revocation carries a nonce (128 bits of the SHA-256 of the request's
  signature); a record whose nonce an earlier record used is ignored, so a signed request replayed
  to another replica never makes a second key. Nonces are kept NONCE_TTL_MS (by record time; a
  signature that old fails the recvWindow check before it is published) and at most MAX_NONCES;
- key management: a key may issue or revoke only keys whose permissions it holds all of, and only
  if it holds manage_keys and is live when its record is applied (may_grant);
- refresh rotation: a session that replaces another starts only if that one is still open, and
  ends it in the same step, so one refresh token yields exactly one new session.
auth.keys must therefore have exactly one partition.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from perpline.auth import crypto
from perpline.contracts import messages as m

USER_ID_BASE = 100_000
MANAGE_KEYS = "manage_keys"  # issue and revoke API keys (a web session, the owner, always may)
PERMISSIONS = ("read", "trade", "withdraw", MANAGE_KEYS)
PRUNE_SESSIONS_EVERY = 1024
NONCE_TTL_MS = 10 * 60_000  # well over the largest recvWindow (60 s) plus clock skew between replicas
MAX_NONCES = 1_000_000


def may_grant(held: Iterable[str], wanted: Iterable[str]) -> bool:
    """The one rule for key management by a key: it holds manage_keys and every permission it
    grants (issue) or takes away (revoke). Nobody gets more than the caller holds."""
    holds = set(held)
    return MANAGE_KEYS in holds and set(wanted) <= holds


@dataclass
class KeyRecord:
    api_key: str
    user_id: int
    secret: str | None  # decrypted; None when the record was encrypted with another key
    permissions: tuple[str, ...]
    label: str
    created_ms: int
    revoked: bool = False


@dataclass
class Session:
    session_id: str
    user_id: int
    refresh_hash: str
    expires_ms: int
    ended: bool = False


class KeyRegistry:
    def __init__(self, secret_key: str) -> None:
        self._secret_key = secret_key
        self._lock = threading.Lock()
        self.keys: dict[str, KeyRecord] = {}
        self.users: dict[int, str] = {}  # user id -> label
        self.logins: dict[str, tuple[int, str]] = {}  # login -> (user id, password hash); first record wins
        self.registered: dict[str, int] = {}  # request id of a UserRegistered -> the user id it made
        self.sessions: dict[str, Session] = {}
        self.nonces: OrderedDict[str, tuple[int, str]] = OrderedDict()  # nonce -> (record ts, its trace id)

    def apply(self, record: m.Msg, offset: int) -> None:
        with self._lock:
            if isinstance(record, m.UserRegistered):
                user_id = USER_ID_BASE + offset
                self.users[user_id] = record.label
                self.registered[record.request_id] = user_id
                if record.login and record.login not in self.logins:
                    self.logins[record.login] = (user_id, record.password_hash)
            elif isinstance(record, m.SessionStarted):
                self._start_session(record)
            elif isinstance(record, m.SessionEnded):
                found_session = self.sessions.get(record.session_id)
                if found_session is not None and found_session.user_id == record.user_id:
                    found_session.ended = True
            elif isinstance(record, m.ApiKeyIssued):
                if self._first_use(record.nonce, record.ts_ms, record.trace_id) and self._issuer_may(
                        record.issued_by, record.user_id, record.permissions) and record.api_key not in self.keys:
                    secret = crypto.decrypt(self._secret_key, record.secret_enc)
                    self.keys[record.api_key] = KeyRecord(record.api_key, record.user_id, secret,
                                                          tuple(record.permissions), record.label, record.ts_ms)
            elif isinstance(record, m.ApiKeyRevoked):
                found = self.keys.get(record.api_key)
                if (self._first_use(record.nonce, record.ts_ms, record.trace_id) and found is not None
                        and found.user_id == record.user_id
                        and self._issuer_may(record.revoked_by, record.user_id, found.permissions)):
                    found.revoked = True

    def _start_session(self, record: m.SessionStarted) -> None:
        """A login starts a session; a refresh (`replaces`) starts one only by ending a session that
        is open, unexpired (at the record's time, so every replica agrees) and the same user's."""
        if record.replaces:
            old = self.sessions.get(record.replaces)
            if old is None or old.ended or old.user_id != record.user_id or old.expires_ms <= record.ts_ms:
                return
            old.ended = True
        self.sessions[record.session_id] = Session(record.session_id, record.user_id, record.refresh_hash,
                                                   record.expires_ms)
        if len(self.sessions) % PRUNE_SESSIONS_EVERY == 0:  # ended or expired sessions serve nothing
            self.sessions = {k: v for k, v in self.sessions.items() if not v.ended and v.expires_ms > record.ts_ms}

    def _first_use(self, nonce: str, ts_ms: int, trace_id: str) -> bool:
        """Whether this record is the first with its nonce (then the nonce is taken by its trace id);
        "" (admin records, records older than nonces) is never checked. Pruned by record time."""
        if not nonce:
            return True
        if nonce in self.nonces:
            return False
        self.nonces[nonce] = (ts_ms, trace_id)
        while self.nonces:
            oldest_ts, _ = next(iter(self.nonces.values()))
            if oldest_ts >= ts_ms - NONCE_TTL_MS and len(self.nonces) <= MAX_NONCES:
                break
            self.nonces.popitem(last=False)
        return True

    def _issuer_may(self, issuer: str, user_id: int, permissions: Iterable[str]) -> bool:
        """The owner ("": a web session or `perpline admin`) may; a key only under may_grant, while live."""
        if not issuer:
            return True
        found = self.keys.get(issuer)
        return (found is not None and not found.revoked and found.user_id == user_id
                and may_grant(found.permissions, permissions))

    def nonce_winner(self, nonce: str) -> str | None:
        """The trace id of the record that used this nonce, None while no record has (an API request
        compares it with its own trace id to learn whether its record won)."""
        with self._lock:
            found = self.nonces.get(nonce)
            return found[1] if found is not None else None

    def login(self, login: str) -> tuple[int, str] | None:
        with self._lock:
            return self.logins.get(login)

    def session(self, session_id: str) -> Session | None:
        with self._lock:
            return self.sessions.get(session_id)

    def get(self, api_key: str) -> KeyRecord | None:
        with self._lock:
            return self.keys.get(api_key)

    def keys_of(self, user_id: int) -> list[KeyRecord]:
        with self._lock:
            return sorted((k for k in self.keys.values() if k.user_id == user_id), key=lambda k: k.created_ms)
