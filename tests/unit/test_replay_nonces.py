"""The one-use rule for signed commands, exchange-wide: the accounts processor applies a nonce once
(perpline.accounts.memory.Memory.use_nonce), and the default client order id never merges two keys."""

from __future__ import annotations

import pytest

from perpline.accounts import memory as mem
from perpline.accounts.handlers import handle
from perpline.accounts.state import AccountState, from_store, to_store
from perpline.auth import signing
from perpline.contracts import ids
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.contracts.units import parse_amount

T0 = 1_700_000_000_000


def withdraw(state: AccountState, rid: str, nonce: str, ts_ms: int = T0, signed_ms: int = T0,
             amount: str = "1") -> list:
    return handle(state, m.Withdraw(trace_id="t", causation_id=rid, ts_ms=ts_ms, request_id=rid, nonce=nonce,
                                    signed_ms=signed_ms, account_id=state.account_id, asset="USDT", amount=amount))


def funded(amount: str = "100") -> AccountState:
    state = AccountState(account_id=7)
    handle(state, m.Deposit(trace_id="t", causation_id="d", ts_ms=T0, request_id="dep", account_id=7, asset="USDT",
                            amount=amount))
    return state


def result(outs: list) -> m.CommandResult:
    return next(o.msg for o in outs if isinstance(o.msg, m.CommandResult))


def journals(outs: list) -> list:
    return [o for o in outs if isinstance(o.msg, m.Journal)]


def keys(*nonces: str) -> list[bytes]:
    return [mem.nonce_key(n) for n in nonces]


def used(state: AccountState) -> list[bytes]:
    """The digests of the nonces the account holds (its memory's keys are in `local`: no store here)."""
    return [digest for digest, _ in mem.Memory(state, mem.DictMemory(state.local)).used_nonces()]


def available(state: AccountState) -> int:
    return state.balances["USDT"].available


def test_a_used_nonce_is_refused_under_a_new_request_id_and_changes_nothing() -> None:
    state = funded()
    nonce = signing.nonce_of("a" * 64)
    assert result(withdraw(state, "r1", nonce)).ok
    before = to_store(state)
    outs = withdraw(state, "r2", nonce, ts_ms=T0 + 30_000)  # the same signature, sent to another replica
    assert result(outs).code == Code.REPLAYED_REQUEST and not result(outs).ok
    assert journals(outs) == [] and available(state) == parse_amount("99")
    refused = from_store(to_store(state))
    kept = from_store(before)
    assert (refused.balances, used(refused)) == (kept.balances, used(kept))  # only r2's decision is new


def test_a_known_request_id_gets_its_first_decision_whatever_the_signature() -> None:
    state = funded()
    assert result(withdraw(state, "K", signing.nonce_of("a" * 64))).ok
    resigned = withdraw(state, "K", signing.nonce_of("b" * 64), ts_ms=T0 + 1000, signed_ms=T0 + 1000)
    exact = withdraw(state, "K", signing.nonce_of("a" * 64), ts_ms=T0 + 2000)
    assert result(resigned).ok and result(exact).ok  # the original answer, applied once
    assert journals(resigned) == journals(exact) == [] and available(state) == parse_amount("99")


def test_a_refused_signed_command_uses_its_nonce_up() -> None:
    state = funded("0.5")
    nonce = signing.nonce_of("c" * 64)
    assert result(withdraw(state, "r1", nonce)).code == Code.INSUFFICIENT_BALANCE
    handle(state, m.Deposit(trace_id="t", causation_id="d", ts_ms=T0, request_id="dep2", account_id=7, asset="USDT",
                            amount="10"))
    assert result(withdraw(state, "r2", nonce)).code == Code.REPLAYED_REQUEST
    assert available(state) == parse_amount("10.5")


def test_unsigned_commands_carry_no_nonce_and_are_not_limited() -> None:
    state = funded()
    for i in range(3):
        assert result(withdraw(state, f"r{i}", "", signed_ms=0)).ok
    assert used(state) == [] and available(state) == parse_amount("97")


def test_a_nonce_is_forgotten_only_once_any_command_it_could_ride_on_is_refused_as_stale() -> None:
    state = funded()
    old = signing.nonce_of("d" * 64)
    assert result(withdraw(state, "r1", old)).ok
    later = T0 + mem.NONCE_KEEP_MS + 1
    assert result(withdraw(state, "r2", signing.nonce_of("e" * 64), ts_ms=later, signed_ms=later)).ok
    assert state.nonce_floor_ms == later - mem.NONCE_KEEP_MS
    outs = withdraw(state, "r3", old, ts_ms=later)  # the forgotten one again: signed before the floor
    assert result(outs).code == Code.STALE_REQUEST and journals(outs) == []
    assert available(state) == parse_amount("98")


def test_a_young_nonce_survives_any_volume_the_cap_refuses_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mem, "MAX_NONCES", 5)
    state = funded()
    for i in range(5):
        assert result(withdraw(state, f"r{i}", f"n{i}", ts_ms=T0 + i, signed_ms=T0 + i)).ok
    outs = withdraw(state, "r5", "n5", ts_ms=T0 + 10, signed_ms=T0 + 10)
    assert result(outs).code == Code.RATE_LIMITED and journals(outs) == []
    assert used(state) == keys(*(f"n{i}" for i in range(5)))  # nothing young forgotten
    assert result(withdraw(state, "r6", "n0", ts_ms=T0 + 20, signed_ms=T0)).code == Code.REPLAYED_REQUEST
    later = T0 + mem.NONCE_KEEP_MS + 3  # n0..n2 aged out: room again
    assert result(withdraw(state, "r7", "n7", ts_ms=later, signed_ms=later)).ok
    assert used(state) == keys("n3", "n4", "n7")


def test_the_cap_sweeps_nonces_that_arrived_out_of_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mem, "MAX_NONCES", 3)
    state = funded()
    signed = [T0 + 50_000, T0, T0 + 1]  # the first arrived signed last: it shields the two behind it
    for i, at in enumerate(signed):
        assert result(withdraw(state, f"r{i}", f"n{i}", ts_ms=T0 + 50_000, signed_ms=at)).ok
    now = T0 + mem.NONCE_KEEP_MS + 10
    assert result(withdraw(state, "r3", "n3", ts_ms=now, signed_ms=now)).ok
    assert used(state) == keys("n0", "n3")


def test_the_nonce_memory_is_part_of_the_stored_account() -> None:
    state = funded()
    withdraw(state, "r1", "n1")
    restored = from_store(to_store(state))
    assert mem.Memory(restored, mem.DictMemory(restored.local)).used_nonces() == [(mem.nonce_key("n1"), T0)]
    assert result(withdraw(restored, "r2", "n1")).code == Code.REPLAYED_REQUEST


def test_a_malformed_nonce_is_refused() -> None:
    state = funded()
    assert result(withdraw(state, "r1", "x" * 65)).code == Code.MALFORMED
    assert result(withdraw(state, "r2", "n", signed_ms=0)).code == Code.MALFORMED
    assert available(state) == parse_amount("100")


def test_every_api_command_carries_the_nonce_fields() -> None:
    for cls in (m.Deposit, m.Withdraw, m.PlaceOrder, m.CancelOrder, m.CancelAll, m.SetLeverage, m.AmendOrder):
        assert issubclass(cls, m.ApiCommand)
        assert {"nonce", "signed_ms"} <= set(cls.__struct_fields__)


def test_the_nonce_is_a_hash_of_the_signature() -> None:
    nonce = signing.nonce_of("f" * 64)
    assert nonce == signing.nonce_of("f" * 64) != signing.nonce_of("e" * 64)
    assert len(nonce) == signing.NONCE_CHARS and "f" * 8 not in nonce


def test_default_client_order_ids_never_merge_two_keys() -> None:
    prefix = "P-order-" + "x" * 40
    one, two = ids.default_client_order_id(prefix + "1"), ids.default_client_order_id(prefix + "2")
    assert one != two and len(one) == len(two) == ids.MAX_CLIENT_ORDER_ID_CHARS
    assert one == ids.default_client_order_id(prefix + "1")  # a resend finds its own order
    assert ids.default_client_order_id("short-key") == "pl-short-key"
    assert ids.default_client_order_id("k" * 33) == "pl-" + "k" * 33
    assert ids.default_client_order_id("k" * 34).startswith("ph-")
    assert ids.default_client_order_id("k" * 64) != ids.default_client_order_id("k" * 63)


def test_nonces_kept_whole_by_an_older_version_are_moved_to_digests_and_still_refused() -> None:
    state = funded()
    state.nonces = {"old-a": T0 - 2, "old-b": T0 - 1}  # the old format, as a stored account may hold it
    state.nonce_digests = {}
    assert result(withdraw(state, "r1", "old-b", signed_ms=T0 - 1)).code == Code.REPLAYED_REQUEST
    assert state.nonces == {} == state.nonce_digests and used(state) == keys("old-a", "old-b")  # order kept
    assert result(withdraw(state, "r2", "new", ts_ms=T0 + 1, signed_ms=T0 + 1)).ok
    assert used(from_store(to_store(state))) == keys("old-a", "old-b", "new")


def test_nonce_digests_kept_in_the_state_by_the_previous_version_are_moved_to_buckets() -> None:
    state = funded()
    state.nonce_digests = {mem.nonce_key("prev"): T0 - 5}
    assert result(withdraw(state, "r1", "prev", signed_ms=T0 - 5)).code == Code.REPLAYED_REQUEST
    assert state.nonce_digests == {} and used(state) == keys("prev") and state.nonce_buckets


class RecordingStore(mem.DictMemory):
    """The processor's store as the handlers see it, counting what each command writes."""

    def __init__(self) -> None:
        super().__init__({})
        self.written: list[tuple[str, int]] = []

    def set_bytes(self, key: str, value: bytes) -> None:
        self.written.append((key, len(value)))
        super().set_bytes(key, value)


def test_a_busy_signed_account_writes_a_small_state_and_a_few_small_keys_per_command() -> None:
    """Five minutes of a signed command every 100 ms (the accounts processor's state used to carry every
    nonce of two minutes and every remembered digest, rewritten on each command: tens of KB)."""
    state, store = funded("100000"), RecordingStore()
    sizes, most_keys, largest = [], 0, 0
    for i in range(3_000):
        at = T0 + 100 * i
        store.written.clear()
        outs = handle(state, m.Withdraw(trace_id="t", causation_id="c", ts_ms=at, request_id=f"r{i}",
                                        nonce=signing.nonce_of(f"{i:064x}"), signed_ms=at, account_id=7,
                                        asset="USDT", amount="0.001"), store)
        assert result(outs).ok
        sizes.append(len(to_store(state)))
        most_keys = max(most_keys, len(store.written))
        largest = max(largest, max(n for _, n in store.written))
    assert max(sizes) < 600, max(sizes)  # balances, counters and a dozen nonce-bucket counts
    assert most_keys <= 2 and largest < 16_000, (most_keys, largest)  # one ring bucket, one nonce bucket
    assert sum(k.startswith("n:") for k in store.data) <= mem.NONCE_KEEP_MS // mem.NONCE_BUCKET_MS + 2
    assert len(mem.Memory(state, store).used_nonces()) <= (mem.NONCE_KEEP_MS + mem.NONCE_BUCKET_MS) // 100
