"""Users and API keys, rebuilt from the auth.keys topic (event-sourced like everything else).

Why a topic: every API replica needs the same keys, issuing and revoking must reach them all
within moments, and the broker is already the system of record; no extra database to run.
A user's id is USER_ID_BASE + the offset of its UserRegistered record (unique without locks).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from perpline.auth import crypto
from perpline.contracts import messages as m

USER_ID_BASE = 100_000
PERMISSIONS = ("read", "trade", "withdraw")
PRUNE_SESSIONS_EVERY = 1024


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

    def apply(self, record: m.Msg, offset: int) -> None:
        with self._lock:
            if isinstance(record, m.UserRegistered):
                user_id = USER_ID_BASE + offset
                self.users[user_id] = record.label
                self.registered[record.request_id] = user_id
                if record.login and record.login not in self.logins:
                    self.logins[record.login] = (user_id, record.password_hash)
            elif isinstance(record, m.SessionStarted):
                self.sessions[record.session_id] = Session(record.session_id, record.user_id, record.refresh_hash,
                                                           record.expires_ms)
                if len(self.sessions) % PRUNE_SESSIONS_EVERY == 0:  # ended or expired sessions serve nothing
                    now_ms = int(time.time() * 1000)
                    self.sessions = {k: v for k, v in self.sessions.items() if not v.ended and v.expires_ms > now_ms}
            elif isinstance(record, m.SessionEnded):
                found_session = self.sessions.get(record.session_id)
                if found_session is not None and found_session.user_id == record.user_id:
                    found_session.ended = True
            elif isinstance(record, m.ApiKeyIssued):
                secret = crypto.decrypt(self._secret_key, record.secret_enc)
                self.keys[record.api_key] = KeyRecord(record.api_key, record.user_id, secret, tuple(record.permissions),
                                                      record.label, record.ts_ms)
            elif isinstance(record, m.ApiKeyRevoked):
                found = self.keys.get(record.api_key)
                if found is not None and found.user_id == record.user_id:
                    found.revoked = True

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
