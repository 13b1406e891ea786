"""Who is calling: a signed request (X-MBX-APIKEY + HMAC-SHA256, as Binance) or, only where the
operator allows it (the embedded demo stack), a bare X-Account-Id header.

Every signed request: key known and not revoked, permission granted, signature over the exact
text, timestamp inside recvWindow; a state-changing request (POST/PUT/DELETE) is accepted once:
this replica remembers its signature (ReplayGuard, the fast first line) and the record it writes
carries the signature's nonce, which the log's single writer applies once for the whole exchange:
the accounts processor for account commands (`one_use`), the key registry for key management
(`request_nonce`, perpline.auth.registry). Reads may repeat.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from perpline.auth import signing
from perpline.auth.registry import MANAGE_KEYS, KeyRecord, KeyRegistry
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.units import UnitError, parse_uint

API_KEY_HEADER = "x-mbx-apikey"
MAX_ACCOUNT_ID = (1 << 30) - 1
READ, TRADE, WITHDRAW = "read", "trade", "withdraw"
MANAGE = MANAGE_KEYS
UNKNOWN_KEY_WAIT_S = 1.0
MAX_API_KEY_CHARS = 128
NO_NONCE: dict[str, Any] = {"nonce": "", "signed_ms": 0}


@dataclass(frozen=True)
class Caller:
    user_id: int
    api_key: str | None  # None: identified by the trusted X-Account-Id header
    params: dict[str, str]  # the signed parameters (query and form body)
    permissions: tuple[str, ...] = ()  # what the key may do
    signature: str = ""  # of this request, unique to it (see request_nonce)


def request_nonce(signature: str = "") -> str:
    """A request's one-use token for records whose replay must be refused on every replica: the
    signature's nonce (signing.nonce_of, as account commands carry it: a replay has the same one),
    or a fresh random one of the same length for callers that did not sign (web sessions, the
    trusted demo header)."""
    if not signature:
        return secrets.token_hex(signing.NONCE_CHARS // 2)
    return signing.nonce_of(signature)


async def signed_caller(request: Request, registry: KeyRegistry | None, guard: signing.ReplayGuard,
                        permission: str) -> Caller:
    api_key = request.headers.get(API_KEY_HEADER)
    if api_key is None:
        raise PerplineError(Code.UNAUTHORIZED, "API-key format invalid.")
    record = await _lookup(registry, api_key)
    if record is None or record.revoked or record.secret is None:
        raise PerplineError(Code.BAD_API_KEY, "Invalid API-key, IP, or permissions for action.")
    if permission not in record.permissions:
        raise PerplineError(Code.BAD_API_KEY, "Invalid API-key, IP, or permissions for action.")
    signed = await _signed_text(request)
    try:
        signing.verify(record.secret, signed)
        signing.check_time(signed.params, int(time.time() * 1000))
    except signing.SignatureError as err:
        raise PerplineError(err.code, err.msg) from err
    if request.method != "GET":
        if not guard.first_use(signed.signature):  # this replica saw it: refused at once
            raise PerplineError(Code.REPLAYED_REQUEST, "this signed request was already received")
        request.state.one_use = {"nonce": signing.nonce_of(signed.signature),
                                 "signed_ms": int(signed.params["timestamp"])}
    return Caller(record.user_id, api_key, signed.params, record.permissions, signed.signature)


def one_use(request: Request) -> dict[str, Any]:
    """The `ApiCommand` fields (nonce, signed_ms) of the command a request sends: set for a signed
    state-changing request, empty values otherwise. The accounts processor applies a nonce once for
    the whole exchange, whichever API replica the request reached."""
    found: dict[str, Any] = getattr(request.state, "one_use", NO_NONCE)
    return found


async def _lookup(registry: KeyRegistry | None, api_key: str) -> KeyRecord | None:
    """The key's record; a key issued a moment ago may still be on its way from auth.keys, so an
    unknown key is looked up again for up to UNKNOWN_KEY_WAIT_S (which also slows key guessing)."""
    if registry is None or len(api_key) > MAX_API_KEY_CHARS:
        return None
    deadline = time.monotonic() + UNKNOWN_KEY_WAIT_S
    record = registry.get(api_key)
    while record is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        record = registry.get(api_key)
    return record


async def _signed_text(request: Request) -> signing.Signed:
    """The signature lives in the query (GET/DELETE, or a JSON body signed as query + body) or at
    the end of a form body (POST/PUT, as ccxt sends them). A name in both the query and a form body
    takes the query's value (Binance's documented rule); a name twice in either one is refused."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    body = (await request.body()).decode("utf-8", "replace")
    try:
        if "signature=" in query:
            signed = signing.split(query)
            if not body:
                return signed
            form = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
            params = {**(signing.unique_params(body) if form else {}), **signed.params}
            return signing.Signed(signed.payload + body, signed.signature, params)
        return signing.split(body)
    except signing.SignatureError as err:
        raise PerplineError(err.code, err.msg) from err


def header_account(request: Request) -> int:
    try:
        return parse_uint(request.headers.get("x-account-id"), what="X-Account-Id", minimum=1, maximum=MAX_ACCOUNT_ID)
    except UnitError as err:
        raise PerplineError(Code.UNAUTHORIZED, "a signed request (X-MBX-APIKEY) is required") from err
