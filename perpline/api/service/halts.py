"""Symbols halted by the reconciler (a matcher sequence gap: docs/reconciliation.md): a new order on
one is refused with SYMBOL_HALTED before it reaches the accounts processor; cancels are never blocked.
Read from ClickHouse `recon_halts`, cached for CACHE_S so an order costs no query; without ClickHouse
nothing is halted (the reconciler needs it too)."""

from __future__ import annotations

import threading
import time
from typing import Any

from perpline.contracts.codes import Code, PerplineError

CACHE_S = 1.0
_lock = threading.Lock()
_cache: dict[str, Any] = {"at": -1e9, "halted": {}}


def halted(d: Any) -> dict[str, str]:
    """{symbol: reason} of the symbols halted now."""
    with _lock:
        if time.monotonic() - _cache["at"] < CACHE_S:
            return dict(_cache["halted"])
    try:
        rows = d.clickhouse().query("SELECT symbol, argMax(halted, updated_ms), argMax(reason, updated_ms) "
                                    "FROM recon_halts GROUP BY symbol").result_rows
        now = {str(s): str(r) for s, h, r in rows if h}
    except Exception:  # noqa: BLE001 (no ClickHouse or no table yet: nothing is known to be halted)
        now = {}
    with _lock:
        _cache.update(at=time.monotonic(), halted=now)
    return now


def check_not_halted(d: Any, symbol: str) -> None:
    reason = halted(d).get(symbol)
    if reason is not None:
        raise PerplineError(Code.SYMBOL_HALTED, f"trading in {symbol} is halted by reconciliation ({reason[:200]}); "
                                                "cancels are still accepted")
