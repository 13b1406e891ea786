"""Two matcher shards on one embedded stack (PERPLINE_MATCHER_SHARDS=2): shard I owns the `orders`
partitions p % 2 == I, so BTCUSDT-PERP and ETHUSDT-PERP (keyed to different partitions) are each matched
by exactly one shard, seen in each shard's own /metrics and in its data dir's shard.json.

Then one shard is taken down: SIGSTOP first, so it stays down for as long as the test needs it to (a
SIGKILLed shard is restarted by the supervisor within about a second), orders of its symbol are
submitted, the other shard's symbol trades meanwhile while the stopped shard's symbol does not; then
SIGKILL, and the restarted shard recovers its WAL, matches the orders that waited, and trades on. Every
trade is in the public tape once and the positions are the sum of the trades (nothing lost or doubled).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from metrics_scrape import endpoints
from prometheus_client.parser import text_string_to_metric_families
from stackutil import Stack, running_stack, stack_pids

pytestmark = pytest.mark.e2e

BUYER, SELLER = 301, 302
PRICES = {"BTCUSDT-PERP": "50000", "ETHUSDT-PERP": "3000"}
QTY = {"BTCUSDT-PERP": "0.010", "ETHUSDT-PERP": "0.100"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory, extra_env={"PERPLINE_MATCHER_SHARDS": "2"})


def _post(stack: Stack, path: str, account: int, body: dict) -> httpx.Response:
    return httpx.post(stack.api + path, json=body, headers={"X-Account-Id": str(account)}, timeout=60)


def _get(stack: Stack, path: str, account: int = 0, **params: object) -> object:
    headers = {"X-Account-Id": str(account)} if account else {}
    answer = httpx.get(stack.api + path, params=params, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _eventually(fn, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not (result := fn()):
        assert time.monotonic() < deadline, f"not reached in {timeout_s}s: {result!r}"
        time.sleep(0.2)
    return result


def _order(stack: Stack, account: int, symbol: str, side: str) -> httpx.Response:
    return _post(stack, "/api/v1/orders", account, {"symbol": symbol, "side": side, "price": PRICES[symbol],
                                                    "quantity": QTY[symbol]})


def _trade(stack: Stack, symbol: str) -> None:
    """A resting sell, then a buy that takes it: answered FILLED once the symbol's shard matched it."""
    rested = _order(stack, SELLER, symbol, "SELL")
    assert rested.status_code == 200 and rested.json()["order"]["status"] == "NEW", rested.text
    taken = _order(stack, BUYER, symbol, "BUY")
    assert taken.status_code == 200 and taken.json()["order"]["status"] == "FILLED", taken.text


def _tape(stack: Stack, symbol: str) -> list[tuple[str, str]]:
    return [(t["price"], t["quantity"]) for t in _get(stack, "/api/v1/market/trades", symbol=symbol)]  # type: ignore[union-attr]


def _inputs_by_shard(stack: Stack) -> dict[str, set[str]]:
    """{shard name: symbols its /metrics counted inputs for}."""
    out = {}
    for name, url in endpoints(stack).items():
        if name.startswith("matcher"):
            families = text_string_to_metric_families(httpx.get(url, timeout=10).text)
            out[name] = {s.labels["symbol"] for f in families if f.name == "perpline_matcher_inputs"
                         for s in f.samples if s.name.endswith("_total") and s.value > 0}
    return out


def _shard_pid(stack: Stack, index: int) -> int:
    for pid in stack_pids(stack.marker):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "perpline.matcher.runner" in argv and argv[argv.index("--shard") + 1] == str(index):
            return pid
    raise AssertionError(f"no process of matcher shard {index}")


def test_two_shards_each_match_their_own_symbols_and_a_killed_shard_recovers_only_its_own(stack: Stack) -> None:
    for account in (BUYER, SELLER):
        deposit = _post(stack, "/api/v1/wallet/deposits", account, {"asset": "USDT", "amount": "10000"})
        assert deposit.status_code == 200, deposit.text
    for symbol in PRICES:
        _trade(stack, symbol)

    matched = _eventually(lambda: (found := _inputs_by_shard(stack)) and all(found.values()) and found)
    assert sorted(matched) == ["matcher-0", "matcher-1"]
    assert matched == {"matcher-0": {"BTCUSDT-PERP"}, "matcher-1": {"ETHUSDT-PERP"}}  # murmur2(symbol) % 2
    for index in (0, 1):
        recorded = json.loads((stack.data_dir / "matcher" / f"shard-{index}" / "shard.json").read_text())
        assert recorded == {"shard": index, "shards": 2, "partitions": [index]}
    assert not (stack.data_dir / "matcher" / "wal").exists()  # no single-matcher state beside the shards

    victim = _shard_pid(stack, 1)  # ETHUSDT-PERP's shard
    os.kill(victim, signal.SIGSTOP)
    with ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(_order, stack, SELLER, "ETHUSDT-PERP", "SELL"),
                   pool.submit(_order, stack, BUYER, "ETHUSDT-PERP", "BUY")]
        _trade(stack, "BTCUSDT-PERP")  # the other shard trades on
        time.sleep(1.0)
        assert len(_tape(stack, "BTCUSDT-PERP")) == 2 and len(_tape(stack, "ETHUSDT-PERP")) == 1
        assert not any(f.done() for f in waiting)  # the stopped shard's symbol waits
        os.kill(victim, signal.SIGKILL)
        _eventually(lambda: len(_tape(stack, "ETHUSDT-PERP")) == 2)
        assert _eventually(lambda: _shard_pid(stack, 1) != victim)
    _trade(stack, "ETHUSDT-PERP")
    _trade(stack, "BTCUSDT-PERP")

    for symbol in PRICES:
        assert _tape(stack, symbol) == [(f"{PRICES[symbol]}.00", QTY[symbol])] * 3, symbol  # once each
        for account, sign in ((BUYER, 1), (SELLER, -1)):
            mine = [p for p in _get(stack, "/api/v1/account/positions", account) if p["symbol"] == symbol]  # type: ignore[union-attr]
            fills = [f for f in _get(stack, "/api/v1/account/trades", account) if f["symbol"] == symbol]  # type: ignore[union-attr]
            assert len(fills) == 3, (account, symbol, fills)
            assert Decimal(mine[0]["size"]) == sign * sum(Decimal(f["quantity"]) for f in fills) == sign * 3 * Decimal(QTY[symbol])
    assert any("restarting matcher-1" in line for line in stack.lines)
    assert not any("restarting matcher-0" in line for line in stack.lines)
