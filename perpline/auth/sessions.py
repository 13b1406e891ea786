"""Browser sessions: a short-lived JWT to call the API with, a refresh token to get the next one.

- access token: JWT (HS256) with sub = user id, sid = session id, exp = now + ACCESS_TTL_S;
  sent as `Authorization: Bearer <token>`; refused once its session ended (logout), so a
  logout takes effect at once on every API replica (sessions are records on auth.keys);
- refresh token: 32 random bytes, shown once; the session stores only its SHA-256. A refresh
  ends the old session and starts a new one (rotation: a stolen, already used token is useless).

The signing key is derived from the configured secret key (PERPLINE_SECRET_KEY), never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

ACCESS_TTL_S = 15 * 60
REFRESH_TTL_S = 7 * 24 * 3600
ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 2048


class TokenError(Exception):
    pass


@dataclass(frozen=True)
class Claims:
    user_id: int
    session_id: str
    expires_s: int


def signing_key(secret_key: str) -> OctKey:
    derived = hmac.new(secret_key.encode(), b"perpline session tokens v1", hashlib.sha256).digest()
    return OctKey.import_key(derived)


def new_session_id() -> str:
    return secrets.token_hex(16)


def new_refresh_token(session_id: str) -> str:
    return f"{session_id}.{secrets.token_urlsafe(32)}"


def refresh_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_of(refresh_token: str) -> str:
    return refresh_token.split(".", 1)[0]


def issue(key: OctKey, user_id: int, session_id: str, now_s: int | None = None) -> tuple[str, int]:
    """(access token, its expiry in unix seconds)."""
    now_s = int(time.time()) if now_s is None else now_s
    expires_s = now_s + ACCESS_TTL_S
    claims = {"sub": str(user_id), "sid": session_id, "iat": now_s, "exp": expires_s, "iss": "perpline"}
    return jwt.encode({"alg": ALGORITHM}, claims, key, algorithms=[ALGORITHM]), expires_s


def verify(key: OctKey, token: str, now_s: int | None = None) -> Claims:
    """The token's claims, or TokenError (bad signature, other algorithm, malformed, expired)."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("token too long")
    try:
        decoded = jwt.decode(token, key, algorithms=[ALGORITHM])
    except (JoseError, ValueError) as err:
        raise TokenError(f"invalid token: {err}") from err
    claims = decoded.claims
    now_s = int(time.time()) if now_s is None else now_s
    try:
        user_id, session_id, expires_s = int(claims["sub"]), str(claims["sid"]), int(claims["exp"])
    except (KeyError, TypeError, ValueError) as err:
        raise TokenError("token lacks sub, sid or exp") from err
    if claims.get("iss") != "perpline":
        raise TokenError("token not issued by perpline")
    if expires_s <= now_s:
        raise TokenError("token expired")
    return Claims(user_id, session_id, expires_s)
