"""Web-session building blocks without a broker: password hashes, access tokens, the session registry."""

from __future__ import annotations

import base64
import json

import pytest

from perpline.auth import passwords, sessions
from perpline.auth.registry import USER_ID_BASE, KeyRegistry
from perpline.contracts import messages as m

META = {"trace_id": "t", "causation_id": "c", "ts_ms": 1}


def test_password_hashes_verify_only_the_password_and_are_salted() -> None:
    stored = passwords.hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert passwords.verify_password("correct horse", stored)
    assert not passwords.verify_password("correct horsf", stored)
    assert passwords.hash_password("correct horse") != stored
    assert not passwords.verify_password("x", "garbage") and not passwords.verify_password("x", "scrypt$1$2$3$4$5")


def test_access_tokens_are_refused_when_forged_expired_or_unsigned() -> None:
    key = sessions.signing_key("k1")
    token, expires_s = sessions.issue(key, 100_007, "s1", now_s=1_000)
    assert sessions.verify(key, token, now_s=1_001) == sessions.Claims(100_007, "s1", expires_s)
    with pytest.raises(sessions.TokenError, match="expired"):
        sessions.verify(key, token, now_s=expires_s)
    with pytest.raises(sessions.TokenError):
        sessions.verify(sessions.signing_key("k2"), token, now_s=1_001)
    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "100008"  # another user, keeping the signature
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(sessions.TokenError):
        sessions.verify(key, f"{header}.{forged}.{token.split('.')[2]}", now_s=1_001)
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none"}').decode().rstrip("=")
    with pytest.raises(sessions.TokenError):
        sessions.verify(key, f"{unsigned}.{payload}.", now_s=1_001)
    with pytest.raises(sessions.TokenError):
        sessions.verify(key, "a" * 5000)


def test_registry_first_login_wins_and_sessions_end() -> None:
    reg = KeyRegistry("k")
    reg.apply(m.UserRegistered(**META, request_id="r1", login="ann", password_hash="h1"), 0)
    reg.apply(m.UserRegistered(**META, request_id="r2", login="ann", password_hash="h2"), 1)
    assert reg.login("ann") == (USER_ID_BASE, "h1")
    assert reg.registered == {"r1": USER_ID_BASE, "r2": USER_ID_BASE + 1}
    reg.apply(m.SessionStarted(**META, session_id="s", user_id=USER_ID_BASE, refresh_hash="x", expires_ms=2**60), 2)
    reg.apply(m.SessionEnded(**META, session_id="s", user_id=USER_ID_BASE + 1), 3)  # not its session: ignored
    assert not reg.session("s").ended  # type: ignore[union-attr]
    reg.apply(m.SessionEnded(**META, session_id="s", user_id=USER_ID_BASE), 4)
    assert reg.session("s").ended  # type: ignore[union-attr]
