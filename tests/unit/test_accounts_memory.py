"""The accounts processor's idempotency memory: request outcomes and closed client ids, in bounded rings
kept in bucket keys beside the account's state key (so what a command writes stays small however long
the account trades), and a lookup that errs on the safe side."""

from __future__ import annotations

import msgspec
import pytest

from perpline.accounts import memory as mem
from perpline.accounts.handlers import handle
from perpline.accounts.memory import DIGEST_BUCKETS, MAX_REMEMBERED_REQUESTS, DictMemory
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


def records(data: dict[str, bytes], prefix: str) -> list[tuple[bytes, int, bytes | None]]:
    """Every record of a ring's buckets ("qd:" or "kd:")."""
    return [r for k, v in data.items() if k.startswith(prefix) for r in mem._bucket_decoder.decode(v)]  # noqa: SLF001


def live_positions(data: dict[str, bytes], prefix: str, remembered: int, capacity: int) -> list[int]:
    return sorted(p for _, p, _ in records(data, prefix) if p >= remembered - capacity)


def test_request_memory_is_a_bounded_ring_and_the_core_does_not_grow() -> None:
    st, store = AccountState(account_id=3), DictMemory({})
    deposit(st, store, "first")
    core_bytes = len(to_store(st))
    for n in range(MAX_REMEMBERED_REQUESTS + 10):
        deposit(st, store, f"d{n}")
    assert len(to_store(st)) <= core_bytes + 16  # counters and integer widths: no ring inside the state
    remembered = MAX_REMEMBERED_REQUESTS + 11
    assert live_positions(store.data, "qd:", remembered, MAX_REMEMBERED_REQUESTS) == list(range(11, remembered))
    buckets = [mem._bucket_decoder.decode(v) for k, v in store.data.items() if k.startswith("qd:")]  # noqa: SLF001
    assert len(buckets) <= DIGEST_BUCKETS and max(map(len, buckets)) < 2 * MAX_REMEMBERED_REQUESTS / DIGEST_BUCKETS
    total = st.balances["USDT"].available
    assert total == parse_amount(str(MAX_REMEMBERED_REQUESTS + 11))
    assert deposit(st, store, f"d{MAX_REMEMBERED_REQUESTS + 9}").ok  # a recent resend: answered, not applied
    assert st.balances["USDT"].available == total
    deposit(st, store, "first")  # older than the window: a new request (the documented limit)
    assert st.balances["USDT"].available == total + parse_amount("1")


def test_an_id_leaves_the_ring_after_capacity_more_and_buckets_drop_what_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mem, "MAX_REMEMBERED_REQUESTS", 8)
    st, store = AccountState(account_id=9), DictMemory({})
    for n in range(40):
        deposit(st, store, f"d{n}")
    assert live_positions(store.data, "qd:", 40, 8) == list(range(32, 40))
    assert len(records(store.data, "qd:")) < 40  # a record that left the ring is dropped when its bucket is rewritten
    assert deposit(st, store, "d39").ok and st.balances["USDT"].available == parse_amount("40")  # remembered
    assert deposit(st, store, "d3").ok and st.balances["USDT"].available == parse_amount("41")  # forgotten: new


def test_a_closed_orders_client_id_still_finds_it() -> None:
    st, store = AccountState(account_id=4), DictMemory({})
    deposit(st, store, "d")
    st.balances["USDT"].available = parse_amount("100000")
    first = place(st, store, "mine", "p1")
    order_id = first.order_id
    handle(st, m.OrderDone(**META, account_id=4, symbol=SYM, seq=1, order_id=order_id, status="CANCELED",
                           leaves="0.010", code=0), store)
    assert st.orders == {} and len(records(store.data, "kd:")) == 1
    again = place(st, store, "mine", "p2")  # a new request id, the same client id: the existing order
    assert again.ok and again.order_id == order_id and st.orders == {}
    other = place(st, store, "other", "p3")
    assert other.order_id != order_id and list(st.orders) == [other.order_id]


def test_without_a_store_the_memory_travels_with_the_state() -> None:
    st = AccountState(account_id=5)
    handle(st, m.Deposit(**META, request_id="x", account_id=5, asset="USDT", amount="2"))
    handle(st, m.Deposit(**META, request_id="x", account_id=5, asset="USDT", amount="2"))
    assert st.balances["USDT"].available == parse_amount("2") and live_positions(st.local, "qd:", 1, 4096) == [0]


def previous_format(st: AccountState, requests: list[str], client_ids: list[str]) -> DictMemory:
    """`st` as the previous format kept its memory: each id's digest by slot inside the state (the entries
    were under a key per slot: none here, as if they were lost); returns the empty store."""
    st.request_digests = b"".join(mem._digest(r) for r in requests)  # noqa: SLF001
    st.client_id_digests = b"".join(mem._digest(c) for c in client_ids)  # noqa: SLF001
    st.requests_remembered, st.client_ids_remembered = len(requests), len(client_ids)
    return DictMemory({})


def test_a_known_id_whose_entry_is_missing_is_refused_never_applied_twice() -> None:
    """The digest decides whether an id is known; the entry only holds the first answer. With the digest
    and no entry, the resend is answered REPLAYED_REQUEST, a resent order DUPLICATE_CLIENT_ORDER_ID, and
    nothing changes."""
    st = AccountState(account_id=6)
    st.balances["USDT"] = Balance(available=parse_amount("100000"))
    store = previous_format(st, ["a"], ["mine"])
    again = deposit(st, store, "a")
    assert (again.ok, again.code) == (False, int(Code.REPLAYED_REQUEST))
    resend = place(st, store, "mine", "p2")  # re-signed: a new request id, the same client id
    assert (resend.ok, resend.code) == (False, int(Code.DUPLICATE_CLIENT_ORDER_ID)) and st.orders == {}
    assert st.balances["USDT"].available == parse_amount("100000") and st.request_digests == b""


def test_a_previous_format_memory_is_moved_out_of_the_state_and_answers_the_same() -> None:
    st = AccountState(account_id=10)
    st.balances["USDT"] = Balance(available=parse_amount("5"))
    store = previous_format(st, [f"d{n}" for n in range(5)], [])
    ok = RequestOutcome(True, 0, "", None, None)
    store.data.update({f"q:{n}": msgspec.msgpack.encode(mem.RequestEntry(f"d{n}", ok)) for n in range(5)})
    assert deposit(st, store, "d2").ok and st.balances["USDT"].available == parse_amount("5")  # a resend
    assert st.request_digests == b"" and not any(k.startswith("q:") for k in store.data)
    assert live_positions(store.data, "qd:", 5, MAX_REMEMBERED_REQUESTS) == [0, 1, 2, 3, 4]
    assert deposit(st, store, "new").ok and st.balances["USDT"].available == parse_amount("6")


def test_an_old_format_memory_is_moved_and_answers_the_same() -> None:
    """States written before the split carry their entries inside `local`; the first command moves them."""
    st, store = AccountState(account_id=8), DictMemory({})
    st.balances["USDT"] = Balance(available=parse_amount("5"))
    st.requests_remembered, st.client_ids_remembered = 2, 1
    st.local = {"rs:0": b"x", "r:x": msgspec.msgpack.encode(RequestOutcome(True, 0, "", None, None)),
                "rs:1": b"y", "r:y": msgspec.msgpack.encode(RequestOutcome(False, 1004, "no", None, None)),
                "cs:0": b"mine", "c:mine": b"42"}
    assert deposit(st, store, "x").ok and st.balances["USDT"].available == parse_amount("5")  # a resend
    assert st.local == {} and live_positions(store.data, "qd:", 2, MAX_REMEMBERED_REQUESTS) == [0, 1]
    assert len(records(store.data, "kd:")) == 1 and not any(k.startswith(("q:", "k:")) for k in store.data)
    assert deposit(st, store, "y").code == 1004
    assert place(st, store, "mine", "p9").order_id == 42  # the closed order, found again
    assert deposit(st, store, "z").ok and st.balances["USDT"].available == parse_amount("6")
    assert st.requests_remembered == 4 and live_positions(store.data, "qd:", 4, MAX_REMEMBERED_REQUESTS) == [0, 1, 2, 3]
