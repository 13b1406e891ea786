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

from perpline import push
from perpline.accounts.handlers import handle
from perpline.accounts.order_status import IllegalTransition
from perpline.accounts.requests import Reject
from perpline.accounts.state import AccountState, from_store, to_store
from perpline.config import topic_map
from perpline.contracts.units import UnitError
from perpline.obs import counter_by_label
from perpline.pipelines import gaps, io
from perpline.pipelines.push_commits import push_on_commit
from perpline.pipelines.runtime import run_stateful

log = logging.getLogger("perpline.accounts")
SOURCE = "accounts"
OUTPUTS = ["orders", "account.events", "ledger.entries", "positions", "dead.letters"]
STATE_KEY = "account"
MAX_CACHED_ACCOUNTS = 100_000

PROCESSED = Counter("perpline_accounts_commands_total", "commands processed", ["type"])
_processed = counter_by_label(PROCESSED)
ALARMS = Counter("perpline_accounts_alarms_total", "invariant violations refused (never applied)")


class DecodedStates:
    """Decoded account states of recent commands, so a busy account is not decoded on every command.

    An entry is used only while the store still holds exactly the bytes it was decoded from (one
    state read and a byte comparison), so an aborted transaction, a rebalance or a restore from the
    changelog can never serve a stale account. At most `limit` entries (oldest dropped).
    """

    def __init__(self, limit: int = MAX_CACHED_ACCOUNTS) -> None:
        self.limit = limit
        self._entries: dict[str, tuple[bytes, AccountState]] = {}

    def load(self, key: str, stored: bytes | None, account_id: int) -> AccountState:
        if stored is None:
            return AccountState(account_id=account_id)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == stored:
            return entry[1]
        return from_store(stored)

    def keep(self, key: str, stored: bytes, account: AccountState) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (stored, account)
        if len(self._entries) > self.limit:
            del self._entries[next(iter(self._entries))]

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)


_decoded = DecodedStates()


def step(raw: bytes, key: str, state: State) -> list[dict[str, Any]]:
    """One command for one account: decode, load state, handle, store, route outputs."""
    cmd, dead = io.decode_or_dead_letter(SOURCE, "account.commands", raw)
    if dead is not None:
        return [dead]
    if str(cmd.account_id) != key:
        return [io.dead_letter(SOURCE, "account.commands", raw, f"key {key!r} is not account {cmd.account_id}")]
    account = _decoded.load(key, state.get_bytes(STATE_KEY), cmd.account_id)
    try:
        outs = handle(account, cmd, state)  # the memory's digests are in the account's key, its entries in keys of their own
    except IllegalTransition as exc:  # a bug upstream: alarm, apply nothing
        _decoded.drop(key)  # a refused leg changed nothing (checks come before applies); dropped anyway, it is cheap
        ALARMS.inc()
        log.error("illegal order transition refused", extra={"trace_id": cmd.trace_id, "error": str(exc)})
        return [io.dead_letter(SOURCE, "account.commands", raw, f"illegal transition: {exc}")]
    except (UnitError, Reject) as exc:  # a settlement leg with numbers no instrument accepts: malformed
        _decoded.drop(key)
        return [io.dead_letter(SOURCE, "account.commands", raw, f"{exc.code.name}: {exc.msg}")]
    stored = to_store(account)
    state.set_bytes(STATE_KEY, stored)  # only a fully applied command changes state
    _decoded.keep(key, stored, account)
    _processed(type(cmd).__name__)
    return [io.routed(o.topic, o.key, o.msg) for o in outs]  # type: ignore[arg-type]


def build(app: Application) -> StreamingDataFrame:
    commands = io.input_topic(app, "account.commands")
    # many writers share account.commands: a command the broker stored late is re-read, never stepped over
    gaps.guard_inputs(app, [commands.name], gaps.HoleReader(io.bootstrap_of(app)))
    sdf = app.dataframe(commands)
    sdf = sdf.apply(lambda value, key, ts, headers, state: step(value, key, state),  # type: ignore[misc]
                    stateful=True, expand=True, metadata=True)
    return io.to_topics(sdf, io.output_topics(app, OUTPUTS))


def build_pushing(app: Application) -> StreamingDataFrame:
    """build(), and account events pushed to API processes as each transaction commits (perpline.push;
    only under exactly-once, where a commit is the moment they become final)."""
    sdf = build(app)
    server = push.server_from_env() if app.config.processing_guarantee == "exactly-once" else None
    if server is not None:
        push_on_commit(app, server, {topic_map()["account.events"]: "account.events"})
    return sdf


def main(argv: list[str] | None = None) -> None:
    run_stateful("accounts", "perpline-accounts", build_pushing, argv)


if __name__ == "__main__":
    main()
