"""Idempotency memory of one account: request outcomes, closed orders' client ids, and the nonces of
signed commands (the one-use rule for signatures, exchange-wide: see `Memory.use_nonce`).

Requests and closed client ids are bounded rings: an id stays remembered while fewer than `capacity`
ids were remembered after it, so an account never holds more than `capacity` of each. All of it is in
the store, beside the account's state key, and none of it in that key:

- DIGEST_BUCKETS keys per ring ("qd:<b>", "kd:<b>"): each remembered id as a record (its 8-byte digest,
  its position in the ring, its entry: the id and its outcome or order id) in the bucket its digest
  names, so a lookup reads one key and remembering an id rewrites one (about 64 records);
- a key per NONCE_BUCKET_MS of signed time ("n:<bucket>"): the digests of the nonces used, with
  their signed times; the state counts them per bucket (`nonce_buckets`).

A command therefore writes its state key (balances, orders, positions, counters: a few hundred bytes),
one ring bucket if it is a request or closes an order, and one nonce bucket if it is signed. Until this
layout the digests (entries under a key per slot) and the nonces were inside the state key, so every
command rewrote all of them: 30-70 KB per command for an account trading a few orders a
second, re-encoded, stored and sent to the changelog each time (bench.load 32 pairs: 724 against
650 orders/s in 40 s with the rings and nonce window shrunk, and runs that slowed down the longer they
went: 446 orders/s over 120 s, 376 over 300 s).

The state key and the memory's keys of one command are written in one Quix checkpoint: one Kafka
transaction for the changelog and one RocksDB write batch locally, so a restore brings back both or
neither (the changelog is read read_committed; perpline's broker and Redpanda never show aborted
records. Tansu does, and is not for crash tests). Within that, a lookup errs on the safe side:

- a digest with its entry: a resend, answered with the first outcome;
- a digest whose entry is missing (moved in from the previous format without it) or another id's: still
  a resend, never applied again; answered REPLAYED_REQUEST ("outcome no longer known"), or for a client
  id DUPLICATE_CLIENT_ORDER_ID.

Two different ids share a digest with a probability of about 2^-64 per pair (4,096 entries: about
4.5e-13 per lookup): such a new request would be refused as a resend, never applied twice.

The store is anything with get_bytes / set_bytes / delete: the processor's state store, or a dict
inside the state (`AccountState.local`) when none is given. States written in older formats (digests
and nonces inside the state; before that the entries inside `local` as "rs:<slot>" -> id, "r:<id>" ->
outcome, "cs:<slot>" -> id, "c:<id>" -> order id) are moved into this one the first time their
account is used.
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
DIGEST_BUCKETS = 64  # per ring: about 64 records (an id and its outcome: ~60-100 bytes each) at 4,096 entries
NONCE_BUCKET_MS = 10_000  # used nonces are kept in buckets of their signed time this wide
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
    """The two rings and the used nonces of one account, in a Store (see the module docstring)."""

    def __init__(self, state: AccountState, store: Store) -> None:
        self.state = state
        self.store = store
        self.requests = _Ring(store, "qd:", MAX_REMEMBERED_REQUESTS, _request_decoder)
        self.client_ids = _Ring(store, "kd:", MAX_REMEMBERED_CLIENT_IDS, _client_decoder)
        if "rs:0" in state.local or "cs:0" in state.local:  # the oldest format: its rings start at slot 0
            _upgrade(state, store)
        if state.request_digests or state.client_id_digests:  # digests kept in the state: move them out
            self.requests.move_in(state.request_digests, state.requests_remembered, "q:")
            self.client_ids.move_in(state.client_id_digests, state.client_ids_remembered, "k:")
            state.request_digests = state.client_id_digests = b""
        if state.nonces or state.nonce_digests:  # nonces kept in the state: move them into their buckets
            self._move_nonces_in()

    def request(self, request_id: str) -> RequestOutcome | None:
        known, entry = self.requests.find(request_id, self.state.requests_remembered)
        if not known:
            return None
        if entry is None:
            return RequestOutcome(False, int(Code.REPLAYED_REQUEST), OUTCOME_UNKNOWN, None, None)
        return entry.outcome  # type: ignore[no-any-return]

    def remember_request(self, request_id: str, outcome: RequestOutcome) -> None:
        self.requests.put(self.state.requests_remembered, request_id, _entry_encoder.encode(RequestEntry(request_id, outcome)))
        self.state.requests_remembered += 1

    def order_id_of(self, client_order_id: str) -> int | None:
        """The order with this client id: an open one, else a recently closed one. Reject
        (DUPLICATE_CLIENT_ORDER_ID) when the id is known to be a closed order's but the entry naming
        the order is missing: a resent order is never placed twice."""
        for order in self.state.orders.values():
            if order.client_order_id == client_order_id:
                return order.order_id
        known, entry = self.client_ids.find(client_order_id, self.state.client_ids_remembered)
        if not known:
            return None
        if entry is None:
            raise Reject(Code.DUPLICATE_CLIENT_ORDER_ID, "this client order id was used by an order that is "
                         "no longer known here")
        return entry.order_id  # type: ignore[no-any-return]

    def remember_closed(self, client_order_id: str, order_id: int) -> None:
        if not client_order_id:
            return
        entry = _entry_encoder.encode(ClientEntry(client_order_id, order_id))
        self.client_ids.put(self.state.client_ids_remembered, client_order_id, entry)
        self.state.client_ids_remembered += 1

    def use_nonce(self, nonce: str, signed_ms: int, now_ms: int) -> tuple[Code, str] | None:
        """Record a signed command's nonce; None if this is its first use, else why it is refused.

        A nonce is forgotten only by age: the floor rises to `now_ms - NONCE_KEEP_MS` (`now_ms` is the
        command's own time, so a replay of this command decides the same), nonces signed before it are
        dropped, and any command signed before it is refused as STALE_REQUEST -- so a forgotten nonce
        can never be applied again, whatever the clocks say. When MAX_NONCES young nonces are held the
        new command is refused (RATE_LIMITED): memory is never made by forgetting a young nonce.

        A nonce is kept in the bucket of its signed time (NONCE_BUCKET_MS wide): a replay carries the
        same signature, so the same signed time (the nonce is a hash of the signature, which covers the
        timestamp), and is looked for in that one bucket.
        """
        if not 0 < len(nonce) <= MAX_NONCE_CHARS or signed_ms <= 0:
            return Code.MALFORMED, "a signed command needs a nonce of 1 to 64 characters and its signed time"
        self._raise_nonce_floor(now_ms - NONCE_KEEP_MS)
        if signed_ms < self.state.nonce_floor_ms:
            return Code.STALE_REQUEST, "Timestamp for this request is outside of the recvWindow."
        digest, bucket = nonce_key(nonce), signed_ms // NONCE_BUCKET_MS
        held = self._nonce_bucket(bucket)
        if _nonce_at(held, digest) is not None:
            return Code.REPLAYED_REQUEST, "this signed request was already applied"
        if self.nonce_count() >= MAX_NONCES:
            self._forget_nonces(every=True)  # exact at the cap: entries signed out of order included
            held = self._nonce_bucket(bucket)  # the sweep may have rewritten this bucket
        if self.nonce_count() >= MAX_NONCES:
            return Code.RATE_LIMITED, f"more than {MAX_NONCES} signed requests in {NONCE_KEEP_MS // 1000} s"
        self.store.set_bytes(f"n:{bucket}", held + _nonce_record(digest, signed_ms))
        self.state.nonce_buckets[bucket] = self.state.nonce_buckets.get(bucket, 0) + 1
        return None

    def nonce_count(self) -> int:
        return sum(self.state.nonce_buckets.values())

    def used_nonces(self) -> list[tuple[bytes, int]]:
        """(digest, signed_ms) of every nonce held, by bucket, each bucket in the order of use."""
        return [record for bucket in sorted(self.state.nonce_buckets) for record in _nonce_records(self._nonce_bucket(bucket))]

    def _nonce_bucket(self, bucket: int) -> bytes:
        return self.store.get_bytes(f"n:{bucket}") or b""

    def _raise_nonce_floor(self, floor_ms: int) -> None:
        if floor_ms > self.state.nonce_floor_ms:
            self.state.nonce_floor_ms = floor_ms
            self._forget_nonces(every=False)

    def _forget_nonces(self, every: bool) -> None:
        """Drop the buckets wholly signed before the floor; with `every`, also the nonces signed before
        it in the bucket the floor falls in (a nonce's bucket is its signed time, so none is elsewhere)."""
        floor, buckets = self.state.nonce_floor_ms, self.state.nonce_buckets
        for bucket in [b for b in buckets if (b + 1) * NONCE_BUCKET_MS <= floor]:
            self.store.delete(f"n:{bucket}")
            del buckets[bucket]
        straddling = floor // NONCE_BUCKET_MS
        if every and straddling in buckets:
            kept = [r for r in _nonce_records(self._nonce_bucket(straddling)) if r[1] >= floor]
            self._write_nonce_bucket(straddling, kept)

    def _write_nonce_bucket(self, bucket: int, records: list[tuple[bytes, int]]) -> None:
        if not records:
            self.store.delete(f"n:{bucket}")
            self.state.nonce_buckets.pop(bucket, None)
            return
        self.store.set_bytes(f"n:{bucket}", b"".join(_nonce_record(d, ms) for d, ms in records))
        self.state.nonce_buckets[bucket] = len(records)

    def _move_nonces_in(self) -> None:
        """Nonces of the older formats (whole, or digests inside the state) into their buckets."""
        held = {nonce_key(nonce): signed_ms for nonce, signed_ms in self.state.nonces.items()}
        held.update(self.state.nonce_digests)
        self.state.nonces, self.state.nonce_digests = {}, {}
        by_bucket: dict[int, list[tuple[bytes, int]]] = {}
        for digest, signed_ms in held.items():
            by_bucket.setdefault(signed_ms // NONCE_BUCKET_MS, []).append((digest, signed_ms))
        for bucket, records in by_bucket.items():
            self._write_nonce_bucket(bucket, _nonce_records(self._nonce_bucket(bucket)) + records)


class _Ring:
    """A bounded ring of remembered ids: the n-th id remembered has position n and stays remembered
    while fewer than `capacity` ids came after it. Each id is a record (its 8-byte digest, its position,
    its entry: the id and what is remembered of it) in one of DIGEST_BUCKETS bucket keys
    "<prefix><b>" (b from the digest). A lookup reads one bucket; remembering an id rewrites one bucket,
    dropping the bucket's records that have left the ring, so a bucket holds about capacity /
    DIGEST_BUCKETS records and never more than `capacity`."""

    def __init__(self, store: Store, prefix: str, capacity: int, decoder: msgspec.msgpack.Decoder[Any]) -> None:
        self.store, self.prefix, self.capacity, self.decoder = store, prefix, capacity, decoder
        self._read: dict[int, list[_Record]] = {}  # buckets read during this command: a lookup, then the write

    def find(self, an_id: str, remembered: int) -> tuple[bool, Any]:
        """(whether `an_id` is remembered, its entry; None if the entry is missing or not its own)."""
        digest = _digest(an_id)
        for held, position, raw in self._records(digest[0] % DIGEST_BUCKETS):
            if held == digest and position >= remembered - self.capacity:
                entry = None if raw is None else self.decoder.decode(raw)
                return True, entry if entry is not None and entry.an_id == an_id else None
        return False, None

    def put(self, position: int, an_id: str, entry: bytes) -> None:
        """Remember `an_id` at `position` (the number of ids remembered before it)."""
        digest = _digest(an_id)
        self._add(digest[0] % DIGEST_BUCKETS, [(digest, position, entry)], position + 1)

    def move_in(self, digests: bytes, remembered: int, entries: str) -> None:
        """A ring of the previous format: digests by slot in one blob, each entry under "<entries><slot>"."""
        by_bucket: dict[int, list[_Record]] = {}
        for slot in range(len(digests) // DIGEST_BYTES):
            digest = digests[slot * DIGEST_BYTES:(slot + 1) * DIGEST_BYTES]
            position = remembered - 1 - (remembered - 1 - slot) % self.capacity
            if digest != bytes(DIGEST_BYTES) and position >= 0:  # zeros: a slot no entry reached
                raw = self.store.get_bytes(f"{entries}{slot}")
                by_bucket.setdefault(digest[0] % DIGEST_BUCKETS, []).append((digest, position, raw))
            self.store.delete(f"{entries}{slot}")
        for b, records in by_bucket.items():
            self._add(b, records, remembered)

    def _records(self, b: int) -> list[_Record]:
        found = self._read.get(b)
        if found is None:
            raw = self.store.get_bytes(f"{self.prefix}{b}")
            found = self._read[b] = [] if raw is None else _bucket_decoder.decode(raw)
        return found

    def _add(self, b: int, records: list[_Record], remembered: int) -> None:
        """Write bucket b with `records` added and the records that have left the ring dropped."""
        floor = remembered - self.capacity
        kept = [r for r in self._records(b) if r[1] >= floor] + records
        assert len(kept) <= self.capacity, "a bucket holds live records only"
        self.store.set_bytes(f"{self.prefix}{b}", _entry_encoder.encode(kept))
        self._read[b] = kept


_Record = tuple[bytes, int, "bytes | None"]  # digest, position, the encoded entry (None: not moved in whole)
_bucket_decoder = msgspec.msgpack.Decoder(list[tuple[bytes, int, bytes | None]])


def _nonce_record(digest: bytes, signed_ms: int) -> bytes:
    return digest + signed_ms.to_bytes(8, "big")


def _nonce_records(bucket: bytes) -> list[tuple[bytes, int]]:
    step = DIGEST_BYTES + 8
    return [(bucket[i:i + DIGEST_BYTES], int.from_bytes(bucket[i + DIGEST_BYTES:i + step], "big"))
            for i in range(0, len(bucket), step)]


def _nonce_at(bucket: bytes, digest: bytes) -> int | None:
    step = DIGEST_BYTES + 8
    at = bucket.find(digest)
    while at != -1 and at % step:
        at = bucket.find(digest, at + 1)
    return None if at == -1 else at // step


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
