"""The accounts processor's idempotency memory: request outcomes and closed client ids, in bounded rings
whose entries and 8-byte digests are in keys of their own beside the account's state key (so what a
command writes stays small however long the account trades), and a lookup that errs on the safe side."""

from __future__ import annotations

import msgspec
import pytest

from perpline.accounts import memory as mem
from perpline.accounts.handlers import handle
from perpline.accounts.memory import (
    DIGEST_BUCKETS,
    DIGEST_BYTES,
    MAX_REMEMBERED_REQUESTS,
    DictMemory,
)
from perpline.accounts.state import AccountState, Balance, RequestOutcome, to_store
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.contracts.units import parse_amount

META = {"trace_id": "t1", "causation_id": "c1", "ts_ms": 1}
SYM = "BTCUSDT-PERP"


def deposit(state: AccountState, store: DictMemory, rid: str) -> m.CommandResult:
    outs = handle(state, m.Deposit(**META, request_id=rid, account_id=state.account_id, asset="USDT", amount="1"), store)
    return next(o.msg for o in outs if isinstance(o.msg, m.CommandResult))


def place(state: AccountState, store: DictMemory, cid: str, rid: str) -> m.CommandResult:
    outs = handle(state, m.PlaceOrder(**META, request_id=rid, account_id=state.account_id, symbol=SYM, side="BUY",
                                      order_type="LIMIT", price="50000", quantity="0.010", client_order_id=cid), store)
    return next(o.msg for o in outs if isinstance(o.msg, m.CommandResult))


def test_request_memory_is_a_bounded_ring_and_the_core_does_not_grow() -> None:
    st, store = AccountState(account_id=3), DictMemory({})
    deposit(st, store, "first")
    core_bytes = len(to_store(st))
    for n in range(MAX_REMEMBERED_REQUESTS + 10):
        deposit(st, store, f"d{n}")
    assert len(to_store(st)) <= core_bytes + 16  # counters and integer widths: no ring inside the state
    assert sum(k.startswith("q:") for k in store.data) == MAX_REMEMBERED_REQUESTS
    buckets = {k: v for k, v in store.data.items() if k.startswith("qd:")}
    assert len(buckets) <= DIGEST_BUCKETS and sum(map(len, buckets.values())) == MAX_REMEMBERED_REQUESTS * (
        DIGEST_BYTES + mem.SLOT_BYTES)  # one record per remembered id: evicted ones are gone
    total = st.balances["USDT"].available
    assert total == parse_amount(str(MAX_REMEMBERED_REQUESTS + 11))
    assert deposit(st, store, f"d{MAX_REMEMBERED_REQUESTS + 9}").ok  # a recent resend: answered, not applied
    assert st.balances["USDT"].available == total
    deposit(st, store, "first")  # older than the window: a new request (the documented limit)
    assert st.balances["USDT"].available == total + parse_amount("1")


def test_a_closed_orders_client_id_still_finds_it() -> None:
    st, store = AccountState(account_id=4), DictMemory({})
    deposit(st, store, "d")
    st.balances["USDT"].available = parse_amount("100000")
    first = place(st, store, "mine", "p1")
    order_id = first.order_id
    handle(st, m.OrderDone(**META, account_id=4, symbol=SYM, seq=1, order_id=order_id, status="CANCELED",
                           leaves="0.010", code=0), store)
    assert st.orders == {} and sum(k.startswith("k:") for k in store.data) == 1
    again = place(st, store, "mine", "p2")  # a new request id, the same client id: the existing order
    assert again.ok and again.order_id == order_id and st.orders == {}
    other = place(st, store, "other", "p3")
    assert other.order_id != order_id and list(st.orders) == [other.order_id]


def test_without_a_store_the_memory_travels_with_the_state() -> None:
    st = AccountState(account_id=5)
    handle(st, m.Deposit(**META, request_id="x", account_id=5, asset="USDT", amount="2"))
    handle(st, m.Deposit(**META, request_id="x", account_id=5, asset="USDT", amount="2"))
    assert st.balances["USDT"].available == parse_amount("2") and "q:0" in st.local


def test_a_resend_whose_entry_is_missing_is_refused_never_applied_twice() -> None:
    """The digest decides whether an id is known; the entry only holds the first answer. With the digest
    found and the entry gone, the resend is answered REPLAYED_REQUEST and changes nothing."""
    st, store = AccountState(account_id=6), DictMemory({})
    first = deposit(st, store, "a")
    assert first.ok
    balance = st.balances["USDT"].available
    digests_only = DictMemory({k: v for k, v in store.data.items() if not k.startswith("q:")})
    again = deposit(st, digests_only, "a")
    assert (again.ok, again.code) == (False, int(Code.REPLAYED_REQUEST)) and st.balances["USDT"].available == balance
    assert deposit(st, store, "a").ok and st.balances["USDT"].available == balance  # the first answer, once


def test_an_evicted_id_whose_entry_is_missing_leaves_no_stale_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mem, "MAX_REMEMBERED_REQUESTS", 8)
    st, store = AccountState(account_id=9), DictMemory({})
    for n in range(8):
        deposit(st, store, f"d{n}")
    del store.data["q:3"]  # the entry naming slot 3's id is gone: its digest is found by looking everywhere
    for n in range(8, 16):
        deposit(st, store, f"d{n}")
    records = [r for k, v in store.data.items() if k.startswith("qd:") for r in mem._slot_records(v)]  # noqa: SLF001
    assert sorted(slot for _, slot in records) == list(range(8))
    assert deposit(st, store, "d3").ok and st.balances["USDT"].available == parse_amount("17")  # forgotten: new


def test_a_previous_format_state_with_digests_inside_is_moved_out_and_answers_the_same() -> None:
    st, store = AccountState(account_id=10), DictMemory({})
    for n in range(5):
        deposit(st, store, f"d{n}")
    ring = bytearray(5 * DIGEST_BYTES)
    for k, v in store.data.items():  # the digests back into the state, by slot, as the previous format kept them
        if k.startswith("qd:"):
            for digest, slot in mem._slot_records(v):  # noqa: SLF001
                ring[slot * DIGEST_BYTES:(slot + 1) * DIGEST_BYTES] = digest
    old_store = DictMemory({k: v for k, v in store.data.items() if not k.startswith("qd:")})
    st.request_digests = bytes(ring)
    assert deposit(st, old_store, "d2").ok and st.balances["USDT"].available == parse_amount("5")  # a resend
    assert st.request_digests == b"" and any(k.startswith("qd:") for k in old_store.data)
    assert deposit(st, old_store, "new").ok and st.balances["USDT"].available == parse_amount("6")


def test_a_closed_orders_client_id_whose_entry_was_not_restored_is_refused_not_placed_again() -> None:
    st, store = AccountState(account_id=7), DictMemory({})
    deposit(st, store, "d")
    st.balances["USDT"].available = parse_amount("100000")
    order_id = place(st, store, "mine", "p1").order_id
    handle(st, m.OrderDone(**META, account_id=7, symbol=SYM, seq=1, order_id=order_id, status="CANCELED",
                           leaves="0.010", code=0), store)
    entry_missing = DictMemory({k: v for k, v in store.data.items() if not k.startswith("k:")})
    resend = place(st, entry_missing, "mine", "p2")  # re-signed: a new request id, the same client id
    assert (resend.ok, resend.code) == (False, int(Code.DUPLICATE_CLIENT_ORDER_ID)) and st.orders == {}


def test_an_old_format_memory_is_moved_and_answers_the_same() -> None:
    """States written before the split carry their entries inside `local`; the first command moves them."""
    st, store = AccountState(account_id=8), DictMemory({})
    st.balances["USDT"] = Balance(available=parse_amount("5"))
    st.requests_remembered, st.client_ids_remembered = 2, 1
    st.local = {"rs:0": b"x", "r:x": msgspec.msgpack.encode(RequestOutcome(True, 0, "", None, None)),
                "rs:1": b"y", "r:y": msgspec.msgpack.encode(RequestOutcome(False, 1004, "no", None, None)),
                "cs:0": b"mine", "c:mine": b"42"}
    assert deposit(st, store, "x").ok and st.balances["USDT"].available == parse_amount("5")  # a resend
    assert st.local == {} and {"q:0", "q:1", "k:0"} <= set(store.data)
    assert deposit(st, store, "y").code == 1004
    assert place(st, store, "mine", "p9").order_id == 42  # the closed order, found again
    assert deposit(st, store, "z").ok and st.balances["USDT"].available == parse_amount("6")
    assert st.requests_remembered == 4 and "q:2" in store.data  # the ring goes on after the moved entries
