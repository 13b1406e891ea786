"""The accounts processor's idempotency memory: request outcomes and closed client ids, in bounded rings
beside the account's core state (so the core does not grow with the account's history)."""

from __future__ import annotations

from perpline.accounts.handlers import handle
from perpline.accounts.memory import MAX_REMEMBERED_REQUESTS, DictMemory
from perpline.accounts.state import AccountState, to_store
from perpline.contracts import messages as m
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
    assert len(to_store(st)) <= core_bytes + 16  # only integer widths grew (counters, balance)
    assert sum(k.startswith("r:") for k in store.data) == MAX_REMEMBERED_REQUESTS
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
    assert st.orders == {} and store.data["c:mine"] == str(order_id).encode()
    again = place(st, store, "mine", "p2")  # a new request id, the same client id: the existing order
    assert again.ok and again.order_id == order_id and st.orders == {}
    other = place(st, store, "other", "p3")
    assert other.order_id != order_id and list(st.orders) == [other.order_id]


def test_without_a_store_the_memory_travels_with_the_state() -> None:
    st = AccountState(account_id=5)
    handle(st, m.Deposit(**META, request_id="x", account_id=5, asset="USDT", amount="2"))
    handle(st, m.Deposit(**META, request_id="x", account_id=5, asset="USDT", amount="2"))
    assert st.balances["USDT"].available == parse_amount("2") and "r:x" in st.local
