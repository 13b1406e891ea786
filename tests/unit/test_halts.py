"""Halted symbols (perpline.api.service.halts): an order never waits on ClickHouse on the event loop,
and a halt recorded by the reconciler is refused within about a second."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from perpline.api.service import halts
from perpline.contracts.codes import Code, PerplineError

SYM = "BTCUSDT-PERP"
QUERY_S = 0.3  # a slow ClickHouse


class SlowClickHouse:
    """recon_halts as the reconciler writes it, answered after QUERY_S (a blocking client, like the real one)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, str]] = []

    def query(self, sql: str) -> Any:
        assert "recon_halts" in sql
        time.sleep(QUERY_S)
        return SimpleNamespace(result_rows=list(self.rows))


@pytest.fixture
def ch(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, SlowClickHouse]:
    monkeypatch.setattr(halts, "_state", {"at": -1e9, "halted": {}})
    client = SlowClickHouse()
    return SimpleNamespace(clickhouse=lambda: client), client


async def refused(d: Any) -> bool:
    try:
        await halts.check_not_halted(d, SYM)
    except PerplineError as err:
        assert err.code == Code.SYMBOL_HALTED
        return True
    return False


def test_orders_never_block_the_event_loop_on_clickhouse(ch: tuple[Any, SlowClickHouse]) -> None:
    d, _ = ch

    async def scenario() -> float:
        gaps: list[float] = []

        async def heartbeat() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                gaps.append(time.monotonic() - last)
                last = time.monotonic()

        beat = asyncio.create_task(heartbeat())
        async with halts.watching(d):
            deadline = time.monotonic() + 2.5  # past STALE_S too
            while time.monotonic() < deadline:
                assert not await refused(d)
                await asyncio.sleep(0.02)
        beat.cancel()
        return max(gaps)

    worst_gap_s = asyncio.run(scenario())
    assert worst_gap_s < QUERY_S / 2, worst_gap_s  # the loop went on while ClickHouse answered


def test_a_halt_is_refused_within_about_a_second(ch: tuple[Any, SlowClickHouse]) -> None:
    d, client = ch

    async def scenario() -> float:
        async with halts.watching(d):
            await asyncio.sleep(0.7)
            assert not await refused(d)
            client.rows = [(SYM, 1, "seq gap"), ("ETHUSDT-PERP", 0, "resumed")]
            halted_at = time.monotonic()
            while not await refused(d):
                assert time.monotonic() - halted_at < 5, "never refused"
                await asyncio.sleep(0.02)
            return time.monotonic() - halted_at

    assert asyncio.run(scenario()) <= halts.REFRESH_S + 2 * QUERY_S + 0.2


def test_without_a_watch_a_stale_set_is_refreshed_off_the_loop(ch: tuple[Any, SlowClickHouse]) -> None:
    d, client = ch
    client.rows = [(SYM, 1, "seq gap")]
    assert asyncio.run(refused(d))  # no watch (a unit-test app): the first order refreshes, in a worker thread
