"""Request signing, key registry and rate limits without a server."""

from __future__ import annotations

import pytest

from perpline.api.ratelimit import RateLimiter
from perpline.auth import crypto, signing
from perpline.auth.registry import USER_ID_BASE, KeyRegistry
from perpline.contracts import messages as m
from perpline.contracts.codes import Code

SECRET = "s" * 64
META = {"trace_id": "t", "causation_id": "c", "ts_ms": 1}


def signed_query(params: str, secret: str = SECRET) -> str:
    return f"{params}&signature={signing.sign(secret, params)}"


def test_a_good_signature_verifies_over_the_exact_text() -> None:
    raw = signed_query("symbol=BTCUSDT&side=BUY&timestamp=1000&recvWindow=5000")
    signed = signing.split(raw)
    signing.verify(SECRET, signed)
    assert signed.params == {"symbol": "BTCUSDT", "side": "BUY", "timestamp": "1000", "recvWindow": "5000"}
    reordered = signing.split(f"side=BUY&symbol=BTCUSDT&timestamp=1000&recvWindow=5000&signature={signed.signature}")
    with pytest.raises(signing.SignatureError) as err:
        signing.verify(SECRET, reordered)  # same params, other order: not what was signed
    assert err.value.code == Code.BAD_SIGNATURE


@pytest.mark.parametrize("raw", ["symbol=BTCUSDT&timestamp=1", "symbol=BTCUSDT&signature=abc",
                                 "a=1&signature=" + "0" * 63 + "g&x=1", "x" * 9000])
def test_malformed_or_missing_signatures_are_refused(raw: str) -> None:
    with pytest.raises(signing.SignatureError):
        signing.verify(SECRET, signing.split(raw))


def test_wrong_secret_and_tampered_params_fail() -> None:
    raw = signed_query("symbol=BTCUSDT&quantity=1&timestamp=1000")
    with pytest.raises(signing.SignatureError):
        signing.verify("x" * 64, signing.split(raw))
    with pytest.raises(signing.SignatureError):
        signing.verify(SECRET, signing.split(raw.replace("quantity=1", "quantity=9")))


def test_recv_window_rules_as_binance() -> None:
    signing.check_time({"timestamp": "10000"}, now_ms=14_000)
    signing.check_time({"timestamp": "10000", "recvWindow": "60000"}, now_ms=69_000)
    for params, now in (({"timestamp": "10000"}, 15_001), ({"timestamp": "12001"}, 11_000),
                        ({"timestamp": "10000", "recvWindow": "1000"}, 11_001)):
        with pytest.raises(signing.SignatureError) as err:
            signing.check_time(params, now_ms=now)
        assert err.value.code == Code.STALE_REQUEST
    for bad in ({}, {"timestamp": "x"}, {"timestamp": "1", "recvWindow": "60001"}):
        with pytest.raises(signing.SignatureError):
            signing.check_time(bad, now_ms=1)


def test_a_signature_is_accepted_once() -> None:
    guard = signing.ReplayGuard(capacity=2)
    assert guard.first_use("a") and not guard.first_use("a")
    assert guard.first_use("b") and guard.first_use("c") and guard.first_use("a")  # 'a' aged out of the bound


def test_secrets_are_stored_encrypted_and_need_the_right_key() -> None:
    key, other = crypto.generate_secret_key(), crypto.generate_secret_key()
    token = crypto.encrypt(key, SECRET)
    assert SECRET not in token and crypto.decrypt(key, token) == SECRET and crypto.decrypt(other, token) is None


def test_registry_issues_revokes_and_numbers_users_by_offset() -> None:
    key = crypto.generate_secret_key()
    reg = KeyRegistry(key)
    reg.apply(m.UserRegistered(**META, request_id="r", label="alice"), offset=7)
    assert reg.users == {USER_ID_BASE + 7: "alice"}
    reg.apply(m.ApiKeyIssued(**META, api_key="k1", user_id=USER_ID_BASE + 7, secret_enc=crypto.encrypt(key, SECRET),
                             permissions=["read"]), offset=8)
    found = reg.get("k1")
    assert found is not None and found.secret == SECRET and found.permissions == ("read",) and not found.revoked
    reg.apply(m.ApiKeyRevoked(**META, api_key="k1", user_id=999), offset=9)  # not the owner: ignored
    assert not reg.get("k1").revoked  # type: ignore[union-attr]
    reg.apply(m.ApiKeyRevoked(**META, api_key="k1", user_id=USER_ID_BASE + 7), offset=10)
    assert reg.get("k1").revoked  # type: ignore[union-attr]
    stranger = KeyRegistry(crypto.generate_secret_key())  # another deployment's key: the secret stays unreadable
    stranger.apply(m.ApiKeyIssued(**META, api_key="k2", user_id=1, secret_enc=crypto.encrypt(key, SECRET),
                                  permissions=["read"]), offset=0)
    assert stranger.get("k2").secret is None  # type: ignore[union-attr]


def test_rate_limits_per_window() -> None:
    limiter = RateLimiter(ip_limit=10, key_limit=5, order_limit=2)
    assert limiter.charge("ip", "1.2.3.4", 6, now_s=60.0)[0]
    allowed, used, retry = limiter.charge("ip", "1.2.3.4", 5, now_s=61.0)
    assert not allowed and used == 11 and retry == 59
    assert limiter.charge("ip", "5.6.7.8", 10, now_s=61.0)[0]  # per IP
    assert limiter.charge("ip", "1.2.3.4", 10, now_s=120.0)[0]  # a new window
