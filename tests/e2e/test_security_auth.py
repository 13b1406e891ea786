"""Issue 16's authentication findings on the real stack, with two API replicas on one broker (no trusted
X-Account-Id, no faucet): key management needs its own permission and never grants more than the caller
holds; a signed key request replayed to the other replica is refused; of two concurrent refreshes with
one token on two replicas exactly one wins; failed logins end in a lockout (429) that the right password
does not bypass."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from stackutil import Stack, admin, api_replica, running_stack

from perpline.auth.throttle import FREE_FAILURES_PER_LOGIN

pytestmark = pytest.mark.e2e
LOCKOUT_MAX_S = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory, {"PERPLINE_TRUST_ACCOUNT_HEADER": "0", "PERPLINE_FAUCET": "0",
                                                "PERPLINE_LOGIN_LOCKOUT_MAX_S": str(LOCKOUT_MAX_S)})


@pytest.fixture(scope="module")
def replicas(stack: Stack) -> Iterator[tuple[str, str]]:
    with api_replica(stack) as url:
        yield stack.api, url


def signed_request(method: str, path: str, keys: dict[str, Any], body: dict | None = None) -> dict[str, Any]:
    """One signed native request (query + JSON body), ready to be sent, and sent again, as is."""
    raw = json.dumps(body) if body is not None else ""
    query = urlencode({"timestamp": int(time.time() * 1000)})
    signature = hmac.new(keys["api_secret"].encode(), (query + raw).encode(), hashlib.sha256).hexdigest()
    return {"method": method, "url": f"{path}?{query}&signature={signature}", "content": raw or None,
            "headers": {"X-MBX-APIKEY": keys["api_key"], "Content-Type": "application/json"}}


def send(base: str, req: dict[str, Any]) -> httpx.Response:
    return httpx.request(req["method"], base + req["url"], content=req["content"], headers=req["headers"], timeout=30)


def native(base: str, method: str, path: str, keys: dict[str, Any], body: dict | None = None) -> httpx.Response:
    return send(base, signed_request(method, path, keys, body))


def key_list(base: str, keys: dict[str, Any]) -> list[tuple[str, tuple[str, ...], bool]]:
    listed = native(base, "GET", "/api/v1/keys", keys)
    assert listed.status_code == 200, listed.text
    return sorted((k["api_key"], tuple(k["permissions"]), k["revoked"]) for k in listed.json())


def at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run the calls in threads released together; their answers in the calls' order."""
    answers: list[httpx.Response | None] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        answers[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a is not None for a in answers)
    return answers  # type: ignore[return-value]


def refused(resp: httpx.Response, status: int, code: int) -> None:
    assert resp.status_code == status and resp.json()["code"] == code, resp.text


def test_a_trade_key_cannot_mint_a_withdraw_key_nor_revoke_another(stack: Stack, replicas: tuple[str, str]) -> None:
    api = replicas[0]
    owner = admin(stack, "create-user", "--label", "owner")
    assert isinstance(owner, dict) and "manage_keys" in owner["permissions"]
    user = str(owner["user_id"])
    trader = admin(stack, "create-key", "--user", user, "--permissions", "read,trade")
    manager = admin(stack, "create-key", "--user", user, "--permissions", "read,trade,manage_keys")
    assert isinstance(trader, dict) and isinstance(manager, dict)
    before = key_list(api, owner)
    assert len(before) == 3

    refused(native(api, "POST", "/api/v1/keys", trader, {"permissions": ["read", "withdraw"]}), 401, 6008)
    refused(native(api, "POST", "/api/v1/keys", trader, {"permissions": ["read"]}), 401, 6008)  # no manage_keys
    for target in (owner, manager):
        refused(native(api, "DELETE", f"/api/v1/keys/{target['api_key']}", trader), 401, 6008)
    refused(native(api, "POST", "/api/v1/keys", manager, {"permissions": ["read", "withdraw"]}), 401, 6008)
    refused(native(api, "DELETE", f"/api/v1/keys/{owner['api_key']}", manager), 401, 6008)  # a stronger key
    assert key_list(api, owner) == before  # nothing changed
    assert native(api, "GET", "/api/v1/account/balances", owner).status_code == 200

    made = native(api, "POST", "/api/v1/keys", manager, {"permissions": ["read"], "label": "bot"})  # within its rights
    assert made.status_code == 200 and made.json()["permissions"] == ["read"], made.text
    revoked = native(api, "DELETE", f"/api/v1/keys/{trader['api_key']}", manager)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True, revoked.text


def test_a_signed_key_request_replayed_to_another_replica_is_refused(stack: Stack, replicas: tuple[str, str]) -> None:
    first, second = replicas
    owner = admin(stack, "create-user", "--label", "replayed")
    assert isinstance(owner, dict)
    before = key_list(first, owner)
    req = signed_request("POST", "/api/v1/keys", owner, {"permissions": ["read"], "label": "once"})
    made = send(first, req)
    assert made.status_code == 200, made.text
    refused(send(second, req), 400, 6007)
    refused(send(first, req), 400, 6007)

    racing = signed_request("POST", "/api/v1/keys", owner, {"permissions": ["read"], "label": "race"})
    answers = at_once([lambda: send(first, racing), lambda: send(second, racing)])
    assert sorted(r.status_code for r in answers) == [200, 400], [r.text for r in answers]
    winner = next(r for r in answers if r.status_code == 200).json()
    for base in replicas:  # exactly the two answered keys were added, on both replicas
        after = key_list(base, owner)
        assert [k for k in after if k not in before] == sorted([(made.json()["api_key"], ("read",), False),
                                                                (winner["api_key"], ("read",), False)])
        assert native(base, "GET", "/api/v1/account/balances", winner).status_code == 200


def test_concurrent_refreshes_on_two_replicas_have_one_winner(replicas: tuple[str, str]) -> None:
    first, second = replicas
    creds = {"login": "refresher", "password": "s3cret-enough"}
    assert httpx.post(f"{first}/api/v1/auth/signup", json=creds, timeout=30).status_code == 200
    tokens = httpx.post(f"{first}/api/v1/auth/login", json=creds, timeout=30).json()
    clients = [httpx.Client(base_url=base, timeout=30) for base in replicas]  # connected before the race starts
    for c in clients:
        assert c.get("/healthz").status_code == 200
    for _ in range(3):
        body = {"refresh_token": tokens["refresh_token"]}
        answers = at_once([functools.partial(c.post, "/api/v1/auth/refresh", json=body) for c in clients])
        assert sorted(r.status_code for r in answers) == [200, 401], [r.text for r in answers]
        loser = next(r for r in answers if r.status_code == 401)
        assert loser.json()["code"] == 6011
        old_access, tokens = tokens["access_token"], next(r for r in answers if r.status_code == 200).json()
        for base in replicas:
            me = httpx.get(f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"},
                           timeout=30)
            assert me.status_code == 200, me.text
            gone = httpx.get(f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {old_access}"}, timeout=30)
            assert gone.status_code == 401


def test_failed_logins_end_in_a_lockout_the_right_password_does_not_bypass(replicas: tuple[str, str]) -> None:
    api = replicas[0]
    creds = {"login": "brute@example.com", "password": "s3cret-enough"}
    assert httpx.post(f"{api}/api/v1/auth/signup", json=creds, timeout=30).status_code == 200
    wrong = {**creds, "password": "not-the-password"}
    answers = [httpx.post(f"{api}/api/v1/auth/login", json=wrong, timeout=30) for _ in range(30)]
    statuses = [r.status_code for r in answers]
    assert set(statuses) == {401, 429} and statuses[:5] == [401] * 5, statuses
    locked = answers[statuses.index(429)]
    assert locked.json()["code"] == 6012 and 1 <= int(locked.headers["Retry-After"]) <= LOCKOUT_MAX_S
    during = httpx.post(f"{api}/api/v1/auth/login", json=creds, timeout=30)
    if during.status_code == 429:  # normally: the lockout is still running
        assert during.json()["code"] == 6012
        time.sleep(int(during.headers["Retry-After"]) + 0.2)
    else:  # the last lockout ended while we asked, and that success cleared the login's failures:
        # its free failures again, one more locks it, then the right password is refused at once
        for _ in range(FREE_FAILURES_PER_LOGIN + 1):
            assert httpx.post(f"{api}/api/v1/auth/login", json=wrong, timeout=30).status_code == 401
        refused(httpx.post(f"{api}/api/v1/auth/login", json=creds, timeout=30), 429, 6012)
        time.sleep(LOCKOUT_MAX_S + 0.2)
    after = httpx.post(f"{api}/api/v1/auth/login", json=creds, timeout=30)
    assert after.status_code == 200, after.text
