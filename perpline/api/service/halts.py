"""Symbols halted by the reconciler (a matcher sequence gap: docs/reconciliation.md): a new order on
one is refused with SYMBOL_HALTED before it reaches the accounts processor; cancels are never blocked.

Read from ClickHouse `recon_halts` by a background task every REFRESH_S, in a worker thread: an order
reads the set kept in memory and never waits on ClickHouse, and a halt is refused within about
REFRESH_S plus one query of being recorded. Should the set be older than STALE_S (no task running,
ClickHouse slow), an order waits for one refresh, in a worker thread too: the event loop never runs a
query. Without ClickHouse nothing is halted (the reconciler needs it too)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from perpline.contracts.codes import Code, PerplineError

log = logging.getLogger("perpline.api.halts")

REFRESH_S = 0.5
STALE_S = 2.0
_refresh_lock = threading.Lock()  # one query at a time; whoever waited for it uses its answer
_state: dict[str, Any] = {"at": -1e9, "halted": {}}


def _query(d: Any) -> dict[str, str]:
    """{symbol: reason} of the symbols halted now, from ClickHouse (blocking: a worker thread's)."""
    try:
        rows = d.clickhouse().query("SELECT symbol, argMax(halted, updated_ms), argMax(reason, updated_ms) "
                                    "FROM recon_halts GROUP BY symbol").result_rows
        return {str(s): str(r) for s, h, r in rows if h}
    except Exception:  # noqa: BLE001 (no ClickHouse or no table yet: nothing is known to be halted)
        return {}


def _refresh(d: Any, unless_since: float) -> None:
    """Query unless someone refreshed after monotonic time `unless_since` while this one waited."""
    with _refresh_lock:
        if _state["at"] > unless_since:
            return
        asked_at = time.monotonic()
        halted = _query(d)
        _state.update(at=asked_at, halted=halted)


async def watch(d: Any) -> None:
    """Refresh the halted set every REFRESH_S until cancelled (the API's lifespan runs one).

    The first refresh waits until the read model has caught up: a starting replica is not ready
    (/readyz) before that, and its first query (and ClickHouse client: about 0.3 s of CPU) would only
    slow the start down (bench.replica). An order arriving earlier still waits for its own refresh."""
    while d.readmodel is not None and not d.readmodel.caught_up.is_set():
        await asyncio.sleep(REFRESH_S / 5)
    while True:
        try:
            await asyncio.to_thread(_refresh, d, time.monotonic())
        except Exception:  # noqa: BLE001 (a failed round is retried at the next)
            log.exception("halted symbols not refreshed")
        await asyncio.sleep(REFRESH_S)


@contextlib.asynccontextmanager
async def watching(d: Any) -> Any:
    task = asyncio.get_running_loop().create_task(watch(d), name="halts-watch")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def halted(d: Any) -> dict[str, str]:
    """{symbol: reason} of the symbols halted now (as of at most REFRESH_S ago while the watch runs)."""
    if time.monotonic() - _state["at"] > STALE_S:
        await asyncio.to_thread(_refresh, d, time.monotonic() - STALE_S)
    found: dict[str, str] = _state["halted"]
    return found


async def check_not_halted(d: Any, symbol: str) -> None:
    reason = (await halted(d)).get(symbol)
    if reason is not None:
        raise PerplineError(Code.SYMBOL_HALTED, f"trading in {symbol} is halted by reconciliation ({reason[:200]}); "
                                                "cancels are still accepted")
