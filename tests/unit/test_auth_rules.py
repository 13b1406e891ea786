"""The auth.keys rules every API replica decides the same way (one-use nonces, key management within
the issuer's rights, one winner per refresh token) and the login brute-force limits."""

from __future__ import annotations

import asyncio
import threading

import pytest

from perpline.auth import crypto, throttle
from perpline.auth.registry import NONCE_TTL_MS, PERMISSIONS, USER_ID_BASE, KeyRegistry, may_grant
from perpline.contracts import codec
from perpline.contracts import messages as m

KEY = crypto.generate_secret_key()
USER = USER_ID_BASE + 1


def meta(trace: str = "t", ts_ms: int = 1_000) -> dict[str, object]:
    return {"trace_id": trace, "causation_id": "c", "ts_ms": ts_ms}


def issued(api_key: str, permissions: list[str], nonce: str = "", by: str = "", trace: str = "t",
           ts_ms: int = 1_000, user: int = USER) -> m.ApiKeyIssued:
    return m.ApiKeyIssued(**meta(trace, ts_ms), api_key=api_key, user_id=user, secret_enc=crypto.encrypt(KEY, "s" * 64),
                          permissions=permissions, nonce=nonce, issued_by=by)  # type: ignore[arg-type]


def registry_with_owner_keys() -> KeyRegistry:
    reg = KeyRegistry(KEY)
    reg.apply(issued("trader", ["read", "trade"]), 1)
    reg.apply(issued("manager", ["manage_keys", "read", "trade"]), 2)
    reg.apply(issued("master", list(PERMISSIONS)), 3)
    return reg


def test_a_replayed_nonce_is_ignored_and_the_winner_is_known_by_its_trace() -> None:
    reg = KeyRegistry(KEY)
    reg.apply(issued("k1", ["read"], nonce="n1", trace="replica-a"), 1)
    reg.apply(issued("k2", ["read"], nonce="n1", trace="replica-b"), 2)  # the same signed request, replayed
    assert reg.get("k1") is not None and reg.get("k2") is None
    assert reg.nonce_winner("n1") == "replica-a" and reg.nonce_winner("n2") is None
    reg.apply(m.ApiKeyRevoked(**meta("replica-b"), api_key="k1", user_id=USER, nonce="n1"), 3)  # reused for a revoke
    assert not reg.get("k1").revoked  # type: ignore[union-attr]


def test_nonces_are_forgotten_by_record_time_only_long_after_any_recv_window() -> None:
    reg = KeyRegistry(KEY)
    reg.apply(issued("k1", ["read"], nonce="old", ts_ms=1_000), 1)
    reg.apply(issued("k2", ["read"], nonce="new", ts_ms=1_000 + 61_000), 2)
    assert reg.nonce_winner("old") is not None  # 61 s later: still remembered
    reg.apply(issued("k3", ["read"], nonce="late", ts_ms=2_000 + NONCE_TTL_MS), 3)
    assert reg.nonce_winner("old") is None and reg.nonce_winner("new") is not None


def test_a_key_cannot_issue_or_revoke_beyond_its_own_rights() -> None:
    reg = registry_with_owner_keys()
    assert not may_grant(("read", "trade"), ["read"])  # no manage_keys: nothing at all
    assert may_grant(("manage_keys", "read", "trade"), ["read", "trade"])
    assert not may_grant(("manage_keys", "read", "trade"), ["read", "withdraw"])
    reg.apply(issued("w1", ["read", "withdraw"], nonce="a", by="trader"), 4)  # trade-only key
    reg.apply(issued("w2", ["read", "withdraw"], nonce="b", by="manager"), 5)  # manages, but holds no withdraw
    reg.apply(issued("w3", ["read", "withdraw"], nonce="c", by="master", user=USER + 1), 6)  # another user's key
    assert reg.get("w1") is None and reg.get("w2") is None and reg.get("w3") is None
    reg.apply(issued("r1", ["read", "trade"], nonce="d", by="manager"), 7)
    assert reg.get("r1") is not None
    reg.apply(m.ApiKeyRevoked(**meta(), api_key="master", user_id=USER, nonce="e", revoked_by="trader"), 8)
    reg.apply(m.ApiKeyRevoked(**meta(), api_key="master", user_id=USER, nonce="f", revoked_by="manager"), 9)
    assert not reg.get("master").revoked  # type: ignore[union-attr]  # stronger than either
    reg.apply(m.ApiKeyRevoked(**meta(), api_key="trader", user_id=USER, nonce="g", revoked_by="manager"), 10)
    assert reg.get("trader").revoked  # type: ignore[union-attr]
    reg.apply(m.ApiKeyRevoked(**meta(), api_key="manager", user_id=USER, nonce="h", revoked_by="master"), 11)
    reg.apply(issued("late", ["read"], nonce="i", by="manager"), 12)  # its issuer was revoked before this record
    assert reg.get("late") is None


def test_two_refreshes_of_one_session_start_only_the_first() -> None:
    reg = KeyRegistry(KEY)
    start = {"user_id": USER, "refresh_hash": "h", "expires_ms": 10_000}
    reg.apply(m.SessionStarted(**meta(), session_id="s0", **start), 1)  # type: ignore[arg-type]
    reg.apply(m.SessionStarted(**meta(), session_id="a", replaces="s0", **start), 2)  # type: ignore[arg-type]
    reg.apply(m.SessionStarted(**meta(), session_id="b", replaces="s0", **start), 3)  # type: ignore[arg-type]
    assert reg.session("s0").ended and reg.session("a") is not None  # type: ignore[union-attr]
    assert not reg.session("a").ended and reg.session("b") is None  # type: ignore[union-attr]
    other = {**start, "user_id": USER + 1}
    reg.apply(m.SessionStarted(**meta(), session_id="c", replaces="a", **other), 4)  # type: ignore[arg-type]
    reg.apply(m.SessionStarted(**meta(ts_ms=20_000), session_id="d", replaces="a", **start), 5)  # type: ignore[arg-type]
    assert reg.session("c") is None and reg.session("d") is None and not reg.session("a").ended  # type: ignore[union-attr]


def test_records_without_the_new_fields_still_decode_and_apply() -> None:
    old = (b'{"type":"api_key_issued","trace_id":"t","causation_id":"c","ts_ms":1,"api_key":"k","user_id":7,'
           b'"secret_enc":"x","permissions":["read"]}')
    record = codec.decode("auth.keys", old)
    assert isinstance(record, m.ApiKeyIssued) and record.nonce == "" and record.issued_by == ""
    reg = KeyRegistry(KEY)
    reg.apply(record, 0)
    reg.apply(record, 1)  # no nonce: not one-use (the operator's own records)
    assert reg.get("k") is not None
    login = m.SessionStarted(**meta(), session_id="s", user_id=USER, refresh_hash="h", expires_ms=2)  # type: ignore[arg-type]
    assert b"replaces" not in codec.encode(login) and b"nonce" not in codec.encode(issued("k", ["read"]))


def test_logins_lock_out_after_free_failures_with_growing_delays() -> None:
    lim = throttle.LoginLimiter(free_per_login=3, free_per_ip=10, first_lockout_s=1.0, max_lockout_s=4.0)
    for _ in range(3):
        assert lim.retry_after_s("ann", "1.1.1.1", now_s=100.0) == 0
        lim.failed("ann", "1.1.1.1", now_s=100.0)
    assert lim.retry_after_s("ann", "1.1.1.1", now_s=100.0) == 0  # three failures are free
    lim.failed("ann", "1.1.1.1", now_s=100.0)
    assert lim.retry_after_s("ann", "1.1.1.1", now_s=100.0) == 1  # the 4th locks: the next try is at 101
    lim.failed("ann", "2.2.2.2", now_s=101.0)
    assert lim.retry_after_s("ann", "3.3.3.3", now_s=101.0) == 2  # per login, whatever the address
    lim.failed("ann", "2.2.2.2", now_s=103.0)
    lim.failed("ann", "2.2.2.2", now_s=107.0)
    assert lim.retry_after_s("ann", "2.2.2.2", now_s=107.0) == 4  # capped at max_lockout_s
    assert lim.retry_after_s("bob", "9.9.9.9", now_s=107.0) == 0
    lim.succeeded("ann")
    assert lim.retry_after_s("ann", "9.9.9.9", now_s=107.0) == 0


def test_one_address_spraying_many_logins_is_locked_too() -> None:
    lim = throttle.LoginLimiter(free_per_login=3, free_per_ip=5, first_lockout_s=2.0)
    for i in range(6):
        lim.failed(f"user{i}", "6.6.6.6", now_s=0.0)
    assert lim.retry_after_s("someone-else", "6.6.6.6", now_s=0.0) == 2
    assert lim.retry_after_s("someone-else", "7.7.7.7", now_s=0.0) == 0
    lim.succeeded("someone-else")  # its own account does not clear the address
    assert lim.retry_after_s("x", "6.6.6.6", now_s=1.0) == 1


def test_the_limiter_tracks_a_bounded_number_of_entries() -> None:
    lim = throttle.LoginLimiter(free_per_login=0, free_per_ip=100, max_tracked=4)
    for i in range(10):
        lim.failed(f"user{i}", "1.1.1.1", now_s=0.0)
    assert len(lim._entries) == 4  # noqa: SLF001
    assert lim.retry_after_s("user9", "2.2.2.2", now_s=0.0) > 0 and lim.retry_after_s("user0", "2.2.2.2", now_s=0.0) == 0


def test_the_hash_pool_refuses_at_once_when_full() -> None:
    pool = throttle.HashPool(workers=1, queue=1)
    gate = threading.Event()

    async def scenario() -> list[object]:
        first = asyncio.ensure_future(pool.run(gate.wait, 5))
        second = asyncio.ensure_future(pool.run(gate.wait, 5))
        await asyncio.sleep(0.05)
        with pytest.raises(throttle.PoolBusy):
            await pool.run(gate.wait, 5)
        gate.set()
        done = await asyncio.gather(first, second)
        return [*done, await pool.run(sum, [1, 2])]

    assert asyncio.run(scenario()) == [True, True, 3]
