"""Processor steps without a broker: routing, dead letters, idempotent replays."""

from __future__ import annotations

from typing import Any

from perpline.accounts.memory import DictMemory
from perpline.accounts.state import from_store
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.pipelines import accounts


class FakeState(DictMemory):
    """A Quix state in memory: the accounts memory's byte store plus Quix's get/set."""

    def __init__(self) -> None:
        super().__init__({})

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


META = {"trace_id": "T1", "causation_id": "c", "ts_ms": 1}


def deposit(rid: str = "r1") -> bytes:
    return codec.encode(m.Deposit(**META, request_id=rid, account_id=5, asset="USDT", amount="100"))


def test_accounts_routes_outputs_to_their_topics_with_account_keys() -> None:
    outs = accounts.step(deposit(), "5", FakeState())
    assert {(o["t"], o["k"]) for o in outs} == {("ledger.entries", "5"), ("account.events", "5")}
    journal = codec.decode("ledger.entries", next(o["v"] for o in outs if o["t"] == "ledger.entries"))
    assert journal.trace_id == "T1" and journal.ref_type == "DEPOSIT"


def test_malformed_command_becomes_a_dead_letter_and_state_is_untouched() -> None:
    state = FakeState()
    for raw, key in ((b"not json", "5"), (b'{"type":"deposit"}', "5"), (deposit(), "6")):
        (out,) = accounts.step(raw, key, state)
        assert out["t"] == "dead.letters"
        letter = codec.decode("dead.letters", out["v"])
        assert letter.source == "accounts" and letter.error
    assert state.data == {}


def test_replayed_command_changes_state_once() -> None:
    state = FakeState()
    accounts.step(deposit(), "5", state)
    first = state.data["account"]
    again = accounts.step(deposit(), "5", state)
    assert [o["t"] for o in again] == ["account.events"]  # only the result, answered again
    assert state.data["account"] == first
    assert from_store(first).balances["USDT"].available == 10000000000


def test_a_state_rolled_back_under_the_cache_is_read_again() -> None:
    """An aborted transaction puts the store back to older bytes: the decoded cache must not win."""
    state = FakeState()
    accounts.step(deposit("r1"), "5", state)
    before = dict(state.data)
    accounts.step(deposit("r2"), "5", state)
    state.data = before  # the second deposit's transaction aborted
    accounts.step(deposit("r3"), "5", state)
    assert from_store(state.data["account"]).balances["USDT"].available == 2 * 10000000000


def test_malformed_settlement_leg_is_a_dead_letter_and_changes_nothing() -> None:
    state = FakeState()
    accounts.step(deposit(), "5", state)
    before = state.data["account"]
    leg = codec.encode(m.FillLeg(**META, account_id=5, symbol="BTCUSDT-PERP", seq=1, trade_id=1, order_id=7,
                                 liquidity="MAKER", side="BUY", price="50000.05", quantity="0.010", order_leaves="0"))
    (out,) = accounts.step(leg, "5", state)
    assert out["t"] == "dead.letters" and "UNKNOWN_ORDER" in codec.decode("dead.letters", out["v"]).error
    assert state.data["account"] == before
    place = codec.encode(m.PlaceOrder(**META, request_id="p1", account_id=5, symbol="BTCUSDT-PERP", side="BUY",
                                      order_type="LIMIT", price="1000", quantity="0.100", client_order_id="x"))
    order_id = next(codec.decode("orders", o["v"]).order_id for o in accounts.step(place, "5", state) if o["t"] == "orders")
    before = state.data["account"]
    bad = codec.encode(m.FillLeg(**META, account_id=5, symbol="BTCUSDT-PERP", seq=1, trade_id=1, order_id=order_id,
                                 liquidity="MAKER", side="BUY", price="1000.05", quantity="0.010", order_leaves="0"))
    (out,) = accounts.step(bad, "5", state)
    assert "PRICE_NOT_ON_TICK" in codec.decode("dead.letters", out["v"]).error
    assert state.data["account"] == before
