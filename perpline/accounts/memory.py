"""Idempotency memory of one account: request outcomes, closed orders' client ids, and the nonces of
signed commands (the one-use rule for signatures, exchange-wide: see `Memory.use_nonce`).

Requests and closed client ids are bounded rings: the n-th entry goes to slot n % capacity, so an
account never holds more than `capacity` of each. Each ring is split in two:

- in the account's state (one key, one changelog record per command): an 8-byte digest of each
  entry's id, by slot (`request_digests`, `client_id_digests`): 32 KiB per full ring;
- in the store, a key per slot ("q:<slot>", "k:<slot>"): the entry itself (the id and its outcome or
  order id), written once when the entry is made.

The account's state used to carry the entries themselves (one key, restored atomically: with the
entries under keys of their own, the crash session once restored balances without the matching
memory on a broker that shows aborted records). It then wrote up to about 1 MB per command for a
busy account, 94 % of the bytes the embedded broker held (README, "Chaos and soak"). The split keeps
the guarantee whatever a restore brings back, because the state alone decides whether an id is known:

- a digest in the state and its entry in the store: a resend, answered with the first outcome;
- a digest in the state, its entry missing or another id's (the entry's write was not restored):
  still a resend, never applied again; answered REPLAYED_REQUEST ("outcome no longer known"), or for
  a client id DUPLICATE_CLIENT_ORDER_ID;
- an entry in the store whose digest is not in the state (the state's write was not restored, or the
  slot was reused): not remembered, exactly as if the entry had never been written.

Two different ids share a digest with a probability of about 2^-64 per pair (4,096 entries: about
4.5e-13 per lookup): such a new request would be refused as a resend, never applied twice.

The store is anything with get_bytes / set_bytes / delete: the processor's state store, or a dict
inside the state (`AccountState.local`) when none is given. States written in the old format (the
entries inside `local` as "rs:<slot>" -> id, "r:<id>" -> outcome, "cs:<slot>" -> id, "c:<id>" ->
order id) are moved into the new one the first time their account is used.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import msgspec

from perpline.accounts.reject import Reject
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
DIGEST_BYTES = 8
OUTCOME_UNKNOWN = "this request was already applied; its outcome is no longer known here: check its order or balance"

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
    """The two rings of one account: digests in the state, entries in a Store."""

    def __init__(self, state: AccountState, store: Store) -> None:
        self.state = state
        self.store = store
        if "rs:0" in state.local or "cs:0" in state.local:  # the old format: its rings start at slot 0
            _upgrade(state, store)
        if state.nonces:  # the old format: nonces kept whole
            _upgrade_nonces(state)

    def request(self, request_id: str) -> RequestOutcome | None:
        known, entry = self._entry(self.state.request_digests, "q:", request_id, _request_decoder)
        if not known:
            return None
        if entry is None:
            return RequestOutcome(False, int(Code.REPLAYED_REQUEST), OUTCOME_UNKNOWN, None, None)
        return entry.outcome

    def remember_request(self, request_id: str, outcome: RequestOutcome) -> None:
        slot = self.state.requests_remembered % MAX_REMEMBERED_REQUESTS
        self.state.request_digests = _put(self.state.request_digests, slot, _digest(request_id))
        self.store.set_bytes(f"q:{slot}", _entry_encoder.encode(RequestEntry(request_id, outcome)))
        self.state.requests_remembered += 1

    def order_id_of(self, client_order_id: str) -> int | None:
        """The order with this client id: an open one, else a recently closed one. Reject
        (DUPLICATE_CLIENT_ORDER_ID) when the id is known to be a closed order's but the entry naming
        the order was not restored: a resent order is never placed twice."""
        for order in self.state.orders.values():
            if order.client_order_id == client_order_id:
                return order.order_id
        known, entry = self._entry(self.state.client_id_digests, "k:", client_order_id, _client_decoder)
        if not known:
            return None
        if entry is None:
            raise Reject(Code.DUPLICATE_CLIENT_ORDER_ID, "this client order id was used by an order that is "
                         "no longer known here")
        return entry.order_id

    def _entry(self, ring: bytes, prefix: str, an_id: str, decoder: msgspec.msgpack.Decoder[Any]) -> tuple[bool, Any]:
        """(whether the state knows `an_id`, its entry if one was restored for it, else None)."""
        slot = _find(ring, _digest(an_id))
        if slot is None:
            return False, None
        raw = self.store.get_bytes(f"{prefix}{slot}")
        entry = None if raw is None else decoder.decode(raw)
        return True, entry if entry is not None and entry.an_id == an_id else None

    def remember_closed(self, client_order_id: str, order_id: int) -> None:
        if not client_order_id:
            return
        slot = self.state.client_ids_remembered % MAX_REMEMBERED_CLIENT_IDS
        self.state.client_id_digests = _put(self.state.client_id_digests, slot, _digest(client_order_id))
        self.store.set_bytes(f"k:{slot}", _entry_encoder.encode(ClientEntry(client_order_id, order_id)))
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
        nonces, key = self.state.nonce_digests, nonce_key(nonce)
        if key in nonces:
            return Code.REPLAYED_REQUEST, "this signed request was already applied"
        self._raise_nonce_floor(now_ms - NONCE_KEEP_MS)
        if signed_ms < self.state.nonce_floor_ms:
            return Code.STALE_REQUEST, "Timestamp for this request is outside of the recvWindow."
        if len(nonces) >= MAX_NONCES:
            self._forget_nonces(every=True)  # exact at the cap: entries signed out of order included
        if len(nonces) >= MAX_NONCES:
            return Code.RATE_LIMITED, f"more than {MAX_NONCES} signed requests in {NONCE_KEEP_MS // 1000} s"
        nonces[key] = signed_ms
        return None

    def _raise_nonce_floor(self, floor_ms: int) -> None:
        if floor_ms > self.state.nonce_floor_ms:
            self.state.nonce_floor_ms = floor_ms
            self._forget_nonces(every=False)

    def _forget_nonces(self, every: bool) -> None:
        """Drop nonces signed before the floor: the oldest-first run of them, or (`every`) all of them."""
        nonces, floor = self.state.nonce_digests, self.state.nonce_floor_ms
        if every:
            for old in [n for n, signed_ms in nonces.items() if signed_ms < floor]:
                del nonces[old]
            return
        while nonces:
            oldest = next(iter(nonces))
            if nonces[oldest] >= floor:
                return
            del nonces[oldest]



class RequestEntry(msgspec.Struct, array_like=True):
    an_id: str  # the request id
    outcome: RequestOutcome


class ClientEntry(msgspec.Struct, array_like=True):
    an_id: str  # the closed order's client order id
    order_id: int


_entry_encoder = msgspec.msgpack.Encoder()
_request_decoder, _client_decoder = msgspec.msgpack.Decoder(RequestEntry), msgspec.msgpack.Decoder(ClientEntry)


def _digest(an_id: str) -> bytes:
    return hashlib.blake2b(an_id.encode(), digest_size=DIGEST_BYTES).digest()


def nonce_key(nonce: str) -> bytes:
    """What the account's state keeps of a used nonce: its 8-byte digest. Two nonces share one with a
    probability of about 2^-64 per pair; the newer command would be refused as a replay, never applied
    twice."""
    return _digest(nonce)


def _upgrade_nonces(state: AccountState) -> None:
    """Move nonces kept whole (the old format) into their digests, oldest first as they were."""
    moved = {nonce_key(nonce): signed_ms for nonce, signed_ms in state.nonces.items()}
    moved.update(state.nonce_digests)
    state.nonce_digests, state.nonces = moved, {}


def _find(ring: bytes, digest: bytes) -> int | None:
    """The slot holding `digest` (aligned on DIGEST_BYTES), or None."""
    at = ring.find(digest)
    while at != -1 and at % DIGEST_BYTES:
        at = ring.find(digest, at + 1)
    return None if at == -1 else at // DIGEST_BYTES


def _put(ring: bytes, slot: int, digest: bytes) -> bytes:
    ring = _pad(ring, slot)
    at = slot * DIGEST_BYTES
    return ring[:at] + digest + ring[at + DIGEST_BYTES:]


def _upgrade(state: AccountState, store: Store) -> None:
    """Move an old-format memory (entries inside `state.local`) into digests and per-slot entries."""
    old = state.local
    for slot, request_id, raw in _old_ring(old, "rs:", "r:"):
        state.request_digests = _put(state.request_digests, slot, _digest(request_id))
        store.set_bytes(f"q:{slot}", _entry_encoder.encode(RequestEntry(request_id, _outcome_decoder.decode(raw))))
    for slot, client_id, raw in _old_ring(old, "cs:", "c:"):
        state.client_id_digests = _put(state.client_id_digests, slot, _digest(client_id))
        store.set_bytes(f"k:{slot}", _entry_encoder.encode(ClientEntry(client_id, int(raw))))
    for key in [k for k in old if k.startswith(("rs:", "r:", "cs:", "c:"))]:
        del old[key]  # in place: without a store of its own the new entries live in this dict too


def _old_ring(old: dict[str, bytes], slots: str, entries: str) -> list[tuple[int, str, bytes]]:
    """(slot, id, entry) of an old-format ring: "<slots><n>" named the id, "<entries><id>" held its entry."""
    found = []
    for key, an_id in old.items():
        if key.startswith(slots):
            raw = old.get(entries + an_id.decode())
            if raw is not None:
                found.append((int(key[len(slots):]), an_id.decode(), raw))
    return found


def _pad(ring: bytes, slot: int) -> bytes:
    """`ring` long enough to hold `slot`'s predecessors; a slot no entry reached (an old-format ring with
    an entry missing) holds zeros, a digest no id is expected to have."""
    missing = slot * DIGEST_BYTES - len(ring)
    return ring + bytes(missing) if missing > 0 else ring
