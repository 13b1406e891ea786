"""Users and API keys, rebuilt from the auth.keys topic (event-sourced like everything else).

Why a topic: every API replica needs the same keys, issuing and revoking must reach them all
within moments, and the broker is already the system of record; no extra database to run.
A user's id is USER_ID_BASE + the offset of its UserRegistered record (unique without locks).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from perpline.auth import crypto
from perpline.contracts import messages as m

USER_ID_BASE = 100_000
PERMISSIONS = ("read", "trade", "withdraw")


@dataclass
class KeyRecord:
    api_key: str
    user_id: int
    secret: str | None  # decrypted; None when the record was encrypted with another key
    permissions: tuple[str, ...]
    label: str
    created_ms: int
    revoked: bool = False


class KeyRegistry:
    def __init__(self, secret_key: str) -> None:
        self._secret_key = secret_key
        self._lock = threading.Lock()
        self.keys: dict[str, KeyRecord] = {}
        self.users: dict[int, str] = {}  # user id -> label

    def apply(self, record: m.Msg, offset: int) -> None:
        with self._lock:
            if isinstance(record, m.UserRegistered):
                self.users[USER_ID_BASE + offset] = record.label
            elif isinstance(record, m.ApiKeyIssued):
                secret = crypto.decrypt(self._secret_key, record.secret_enc)
                self.keys[record.api_key] = KeyRecord(record.api_key, record.user_id, secret, tuple(record.permissions),
                                                      record.label, record.ts_ms)
            elif isinstance(record, m.ApiKeyRevoked):
                found = self.keys.get(record.api_key)
                if found is not None and found.user_id == record.user_id:
                    found.revoked = True

    def get(self, api_key: str) -> KeyRecord | None:
        with self._lock:
            return self.keys.get(api_key)

    def keys_of(self, user_id: int) -> list[KeyRecord]:
        with self._lock:
            return sorted((k for k in self.keys.values() if k.user_id == user_id), key=lambda k: k.created_ms)
