"""Halted symbols (perpline.api.service.halts): an order never waits on ClickHouse on the event loop,
and a halt recorded by the reconciler is refused soon after.

Nothing here is timed (the machines are shared and loaded): the ClickHouse stand-in records the thread
each query runs on and, when told to, holds a query open until the test lets it go."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from perpline.api.service import halts
from perpline.contracts.codes import Code, PerplineError

SYM = "BTCUSDT-PERP"
WAIT_S = 5.0  # a bound for liveness only: what is waited for happens long before it, or not at all


class GatedClickHouse:
    """recon_halts as the reconciler writes it, from a blocking client (like the real one) that records
    the thread of each query and answers only while `gate` is open."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.threads: list[int] = []  # the thread of each query, in order
        self.running = 0  # queries started and not yet answered
        self._started = threading.Condition()

    def query(self, sql: str) -> Any:
        assert "recon_halts" in sql
        with self._started:
            self.threads.append(threading.get_ident())
            self.running += 1
            self._started.notify_all()
        self.gate.wait(WAIT_S)  # a stuck test ends, as a failure
        rows = list(self.rows)
        with self._started:
            self.running -= 1
            self._started.notify_all()
        return SimpleNamespace(result_rows=rows)

    def wait_started(self, n: int) -> bool:
        """Block until `n` queries have started (a worker thread's wait, never the event loop's)."""
        with self._started:
            return self._started.wait_for(lambda: len(self.threads) >= n, WAIT_S)

    def wait_answered(self, n: int) -> bool:
        """Block until `n` queries have started and none is still running."""
        with self._started:
            return self._started.wait_for(lambda: len(self.threads) >= n and not self.running, WAIT_S)


@pytest.fixture
def ch(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, GatedClickHouse]]:
    monkeypatch.setattr(halts, "_state", {"at": -1e9, "halted": {}})
    client = GatedClickHouse()
    yield SimpleNamespace(clickhouse=lambda: client, readmodel=None), client
    client.gate.set()  # never leave a worker thread (and the refresh lock) held


async def refused(d: Any) -> bool:
    try:
        await halts.check_not_halted(d, SYM)
    except PerplineError as err:
        assert err.code == Code.SYMBOL_HALTED
        return True
    return False


def test_orders_never_block_the_event_loop_on_clickhouse(ch: tuple[Any, GatedClickHouse],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Orders are answered from memory while a refresh hangs; one that must wait for a refresh (a stale
    set) waits in a worker thread while the loop goes on."""
    d, client = ch
    monkeypatch.setattr(halts, "STALE_S", 3600.0)  # stale only when the test says so, however slow the machine

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        async with halts.watching(d):
            assert await asyncio.to_thread(client.wait_answered, 1)
            client.gate.clear()  # the next refresh hangs until let go: a ClickHouse that does not answer
            try:
                assert await asyncio.to_thread(client.wait_started, 2)
                for _ in range(20):  # orders go on while that query is in progress
                    assert not await asyncio.wait_for(refused(d), WAIT_S)
                assert client.running == 1
                halts._state["at"] = -1e9  # stale: the next order waits for a refresh (behind the hanging one)
                order = asyncio.create_task(refused(d))
                for _ in range(10):
                    await asyncio.sleep(0)  # the loop runs other work meanwhile
                assert not order.done() and client.running == 1
                client.gate.set()
                assert not await asyncio.wait_for(order, WAIT_S)
            finally:
                client.gate.set()
        assert client.threads and loop_thread not in client.threads  # no query ever ran on the loop

    asyncio.run(scenario())


def test_a_halt_is_refused_within_seconds(ch: tuple[Any, GatedClickHouse]) -> None:
    """A liveness check (about REFRESH_S plus one query is expected; only WAIT_S is asserted)."""
    d, client = ch

    async def scenario() -> None:
        async with halts.watching(d):
            assert await asyncio.to_thread(client.wait_answered, 1)
            assert not await refused(d)
            client.rows = [(SYM, 1, "seq gap"), ("ETHUSDT-PERP", 0, "resumed")]
            halted_at = time.monotonic()
            while not await refused(d):
                assert time.monotonic() - halted_at < WAIT_S, "never refused"
                await asyncio.sleep(0.02)

    asyncio.run(scenario())


def test_without_a_watch_a_stale_set_is_refreshed_off_the_loop(ch: tuple[Any, GatedClickHouse]) -> None:
    d, client = ch
    client.rows = [(SYM, 1, "seq gap")]
    assert asyncio.run(refused(d))  # no watch (a unit-test app): the first order refreshes, in a worker thread
    assert client.threads and threading.get_ident() not in client.threads  # asyncio.run's loop is this thread's


def test_a_starting_replica_queries_only_once_its_read_model_caught_up(ch: tuple[Any, GatedClickHouse]) -> None:
    """The watch's first query waits for the read model (a replica is not ready before: the query and its
    ClickHouse client would only slow its start); an order meanwhile still gets its own refresh."""
    d, client = ch
    d.readmodel = SimpleNamespace(caught_up=threading.Event())

    async def scenario() -> None:
        async with halts.watching(d):
            await asyncio.sleep(halts.REFRESH_S * 2)
            assert client.threads == []  # still catching up: the watch did not query
            assert not await refused(d)  # an order (the set is stale) waits for a refresh of its own
            assert len(client.threads) == 1
            d.readmodel.caught_up.set()
            assert await asyncio.to_thread(client.wait_answered, 2)  # now the watch refreshes

    asyncio.run(scenario())
