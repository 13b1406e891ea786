"""Binance-style request signing, pure: HMAC-SHA256 over the exact query string or body.

The client sends `...&timestamp=T[&recvWindow=W]&signature=HEX` (GET/DELETE in the query,
POST/PUT in an x-www-form-urlencoded body) and its key in X-MBX-APIKEY. We split the raw text
at the last `&signature=`, HMAC the part before it with the user's secret and compare in
constant time; nothing is re-encoded or re-ordered.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import parse_qsl

from perpline.contracts.codes import Code
from perpline.contracts.units import UnitError, parse_uint

MAX_RECV_WINDOW_MS = 60_000
DEFAULT_RECV_WINDOW_MS = 5_000
FUTURE_TOLERANCE_MS = 1_000
MAX_SIGNED_CHARS = 8_192
REPLAY_MEMORY = 100_000


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Signed:
    payload: str  # the exact text that was signed
    signature: str
    params: dict[str, str]


class SignatureError(Exception):
    def __init__(self, code: Code, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def split(raw: str) -> Signed:
    """The signed text, its signature and the parsed params; raises SignatureError."""
    if len(raw) > MAX_SIGNED_CHARS:
        raise SignatureError(Code.REQUEST_TOO_LARGE, "signed request too long")
    head, sep, signature = raw.rpartition("&signature=")
    if not sep:
        if raw.startswith("signature="):
            head, signature = "", raw.removeprefix("signature=")
        else:
            raise SignatureError(Code.BAD_SIGNATURE, "signature is missing")
    if "&" in signature or len(signature) != 64:
        raise SignatureError(Code.BAD_SIGNATURE, "Signature for this request is not valid.")
    return Signed(head, signature.lower(), unique_params(head))


def unique_params(text: str) -> dict[str, str]:
    """The parameters of a query string or form body; a name given twice is refused (Binance -1101),
    never silently resolved to one of its values."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError as exc:
        raise SignatureError(Code.MALFORMED, f"malformed parameters: {exc}") from exc
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise SignatureError(Code.DUPLICATE_PARAMETER, f"parameter {name!r} given twice")
        params[name] = value
    return params


def verify(secret: str, signed: Signed) -> None:
    if not hmac.compare_digest(sign(secret, signed.payload), signed.signature):
        raise SignatureError(Code.BAD_SIGNATURE, "Signature for this request is not valid.")


def check_time(params: dict[str, str], now_ms: int) -> None:
    """Binance's rule: refuse timestamp > now + 1 s or now - timestamp > recvWindow."""
    if "timestamp" not in params:
        raise SignatureError(Code.MISSING_FIELD, "timestamp is mandatory")
    try:
        timestamp = parse_uint(params["timestamp"], what="timestamp")
        window = parse_uint(params.get("recvWindow", str(DEFAULT_RECV_WINDOW_MS)), what="recvWindow")
    except UnitError as exc:
        raise SignatureError(exc.code, exc.msg) from exc
    if not 0 < window <= MAX_RECV_WINDOW_MS:
        raise SignatureError(Code.BAD_NUMBER, f"recvWindow must be 1..{MAX_RECV_WINDOW_MS}")
    if timestamp > now_ms + FUTURE_TOLERANCE_MS or now_ms - timestamp > window:
        raise SignatureError(Code.STALE_REQUEST, "Timestamp for this request is outside of the recvWindow.")


NONCE_CHARS = 32  # 128 bits of the signature's SHA-256: no two signatures share one by chance


def nonce_of(signature: str) -> str:
    """The one-use token of a signed request, carried by its account command (`ApiCommand.nonce`):
    a hash, so the topic never holds a signature that could be paired with its text again."""
    return hashlib.sha256(signature.encode()).hexdigest()[:NONCE_CHARS]


class ReplayGuard:
    """Refuses a signature seen before by this process: the fast first line. Bounded memory; a
    signature older than the largest recvWindow can no longer pass check_time anyway. The rule for
    the whole exchange (every API replica) is the accounts processor's: a command carrying an
    already-used nonce is refused there (perpline.accounts.memory.Memory.use_nonce)."""

    def __init__(self, capacity: int = REPLAY_MEMORY) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def first_use(self, signature: str) -> bool:
        with self._lock:
            if signature in self._seen:
                return False
            self._seen[signature] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return True
