"""accounts: the single writer of each account's balances, reservations, orders and positions.

account.commands (key: account id) -> state per account -> orders, account.events,
ledger.entries, positions (and dead.letters). Exactly-once; every step deterministic
so a replay after a crash reproduces the same outputs with the same ids.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter
from quixstreams import Application
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.state import State

from perpline.accounts.handlers import Reject, handle
from perpline.accounts.order_status import IllegalTransition
from perpline.accounts.state import AccountState, from_store, to_store
from perpline.contracts.units import UnitError
from perpline.pipelines import io
from perpline.pipelines.runtime import run_stateful

log = logging.getLogger("perpline.accounts")
SOURCE = "accounts"
OUTPUTS = ["orders", "account.events", "ledger.entries", "positions", "dead.letters"]
STATE_KEY = "account"

PROCESSED = Counter("perpline_accounts_commands_total", "commands processed", ["type"])
ALARMS = Counter("perpline_accounts_alarms_total", "invariant violations refused (never applied)")


def step(raw: bytes, key: str, state: State) -> list[dict[str, Any]]:
    """One command for one account: decode, load state, handle, store, route outputs."""
    cmd, dead = io.decode_or_dead_letter(SOURCE, "account.commands", raw)
    if dead is not None:
        return [dead]
    if str(cmd.account_id) != key:
        return [io.dead_letter(SOURCE, "account.commands", raw, f"key {key!r} is not account {cmd.account_id}")]
    stored = state.get(STATE_KEY)
    account = from_store(stored) if stored is not None else AccountState(account_id=cmd.account_id)
    try:
        outs = handle(account, cmd)
    except IllegalTransition as exc:  # a bug upstream: alarm, apply nothing
        ALARMS.inc()
        log.error("illegal order transition refused", extra={"trace_id": cmd.trace_id, "error": str(exc)})
        return [io.dead_letter(SOURCE, "account.commands", raw, f"illegal transition: {exc}")]
    except (UnitError, Reject) as exc:  # a settlement leg with numbers no instrument accepts: malformed
        return [io.dead_letter(SOURCE, "account.commands", raw, f"{exc.code.name}: {exc.msg}")]
    state.set(STATE_KEY, to_store(account))  # only a fully applied command changes state
    PROCESSED.labels(type(cmd).__name__).inc()
    return [io.routed(o.topic, o.key, o.msg) for o in outs]  # type: ignore[arg-type]


def build(app: Application) -> StreamingDataFrame:
    sdf = app.dataframe(io.input_topic(app, "account.commands"))
    sdf = sdf.apply(lambda value, key, ts, headers, state: step(value, key, state),  # type: ignore[misc]
                    stateful=True, expand=True, metadata=True)
    return io.to_topics(sdf, io.output_topics(app, OUTPUTS))


def main(argv: list[str] | None = None) -> None:
    run_stateful("accounts", "perpline-accounts", build, argv)


if __name__ == "__main__":
    main()
