"""Idempotency memory of one account: request outcomes, closed orders' client ids, and the nonces of
signed commands (the one-use rule for signatures, exchange-wide: see `Memory.use_nonce`).

Kept apart from the account's core state (balances, open orders, positions) so that the
core stays small: the core is read and written on every command, these entries only when
a request arrives or an order closes. Each kind is a bounded ring: slot n % capacity names
the entry to forget when it is reused, so an account never holds more than `capacity`.

The store is anything with get_bytes / set_bytes / delete. The accounts processor keeps it in
the account's own state (`AccountState.local`), so an account's balances and its memory are one
state key and one changelog record: restored together or not at all. (Stored under separate keys,
a crash in the middle of writing a checkpoint could restore the balances without the memory on a
broker that exposes an aborted transaction's records -- the embedded one does -- and a resent
request would then be applied twice; the crash session test caught exactly that.) The rings bound
the cost: a full memory is about 265 KB, 0.4 ms to encode; decoding is skipped while the processor's
decoded-state cache holds the account.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from perpline.accounts.state import AccountState, RequestOutcome
from perpline.auth.signing import MAX_RECV_WINDOW_MS
from perpline.contracts.codes import Code

MAX_REMEMBERED_REQUESTS = 4096  # per account: a resend older than this many requests is a new request
MAX_REMEMBERED_CLIENT_IDS = 4096  # per account: closed orders' client ids (open orders' are in the core)
# A signed request passes an API only within recvWindow (at most 60 s) of its timestamp, so a nonce need
# not be kept longer; twice that leaves room for API clocks that disagree and for time spent in the API.
NONCE_KEEP_MS = 2 * MAX_RECV_WINDOW_MS
# Per account: 1200 orders/min per key is 2,400 per key in NONCE_KEEP_MS; this allows 3+ keys at full rate.
MAX_NONCES = 8192
MAX_NONCE_CHARS = 64

_outcome_encoder = msgspec.msgpack.Encoder()
_outcome_decoder = msgspec.msgpack.Decoder(RequestOutcome)


class Store(Protocol):
    def get_bytes(self, key: str, default: bytes | None = None) -> bytes | None: ...

    def set_bytes(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...


class DictMemory:
    """A Store over a plain dict (the account's `local` field when no processor store is given)."""

    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = data

    def get_bytes(self, key: str, default: bytes | None = None) -> bytes | None:
        return self.data.get(key, default)

    def set_bytes(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class Memory:
    """The two rings of one account over a Store."""

    def __init__(self, state: AccountState, store: Store) -> None:
        self.state = state
        self.store = store

    def request(self, request_id: str) -> RequestOutcome | None:
        raw = self.store.get_bytes("r:" + request_id)
        return None if raw is None else _outcome_decoder.decode(raw)

    def remember_request(self, request_id: str, outcome: RequestOutcome) -> None:
        slot = self.state.requests_remembered % MAX_REMEMBERED_REQUESTS
        self._reuse_slot(f"rs:{slot}", "r:", request_id)
        self.store.set_bytes("r:" + request_id, _outcome_encoder.encode(outcome))
        self.state.requests_remembered += 1

    def order_id_of(self, client_order_id: str) -> int | None:
        """The order with this client id: an open one, else a recently closed one."""
        for order in self.state.orders.values():
            if order.client_order_id == client_order_id:
                return order.order_id
        raw = self.store.get_bytes("c:" + client_order_id)
        return None if raw is None else int(raw)

    def remember_closed(self, client_order_id: str, order_id: int) -> None:
        if not client_order_id:
            return
        slot = self.state.client_ids_remembered % MAX_REMEMBERED_CLIENT_IDS
        self._reuse_slot(f"cs:{slot}", "c:", client_order_id)
        self.store.set_bytes("c:" + client_order_id, str(order_id).encode())
        self.state.client_ids_remembered += 1

    def use_nonce(self, nonce: str, signed_ms: int, now_ms: int) -> tuple[Code, str] | None:
        """Record a signed command's nonce; None if this is its first use, else why it is refused.

        A nonce is forgotten only by age: the floor rises to `now_ms - NONCE_KEEP_MS` (`now_ms` is the
        command's own time, so a replay of this command decides the same), nonces signed before it are
        dropped, and any command signed before it is refused as STALE_REQUEST -- so a forgotten nonce
        can never be applied again, whatever the clocks say. When MAX_NONCES young nonces are held the
        new command is refused (RATE_LIMITED): memory is never made by forgetting a young nonce.
        """
        if not 0 < len(nonce) <= MAX_NONCE_CHARS or signed_ms <= 0:
            return Code.MALFORMED, "a signed command needs a nonce of 1 to 64 characters and its signed time"
        nonces = self.state.nonces
        if nonce in nonces:
            return Code.REPLAYED_REQUEST, "this signed request was already applied"
        self._raise_nonce_floor(now_ms - NONCE_KEEP_MS)
        if signed_ms < self.state.nonce_floor_ms:
            return Code.STALE_REQUEST, "Timestamp for this request is outside of the recvWindow."
        if len(nonces) >= MAX_NONCES:
            self._forget_nonces(every=True)  # exact at the cap: entries signed out of order included
        if len(nonces) >= MAX_NONCES:
            return Code.RATE_LIMITED, f"more than {MAX_NONCES} signed requests in {NONCE_KEEP_MS // 1000} s"
        nonces[nonce] = signed_ms
        return None

    def _raise_nonce_floor(self, floor_ms: int) -> None:
        if floor_ms > self.state.nonce_floor_ms:
            self.state.nonce_floor_ms = floor_ms
            self._forget_nonces(every=False)

    def _forget_nonces(self, every: bool) -> None:
        """Drop nonces signed before the floor: the oldest-first run of them, or (`every`) all of them."""
        nonces, floor = self.state.nonces, self.state.nonce_floor_ms
        if every:
            for old in [n for n, signed_ms in nonces.items() if signed_ms < floor]:
                del nonces[old]
            return
        while nonces:
            oldest = next(iter(nonces))
            if nonces[oldest] >= floor:
                return
            del nonces[oldest]

    def _reuse_slot(self, slot_key: str, prefix: str, new_id: str) -> None:
        old = self.store.get_bytes(slot_key)
        if old is not None:
            self.store.delete(prefix + old.decode())
        self.store.set_bytes(slot_key, new_id.encode())
