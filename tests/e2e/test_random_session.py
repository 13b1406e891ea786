"""A seeded random trading session through /fapi, compared step by step with an independent model
(bench/session.py), while every kind of component but the broker is SIGKILLed in the middle of it:
matcher, accounts, ledger sink, risk, index feed, reconciler, the API and the embedded
ClickHouse server, each at least once. Every 200 answer must be the order as matching left it, even
right after a kill; the end checks are those of `python -m bench.chaos` (the long version).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from stackutil import Stack, admin, kill_component, running_stack

from bench.session import DEPOSIT_USDT, RandomSession

pytestmark = pytest.mark.e2e
STEPS = int(os.environ.get("PERPLINE_RANDOM_SESSION_STEPS", "120"))
USERS = 3
KILL_EVERY = int(os.environ.get("PERPLINE_RANDOM_SESSION_KILL_EVERY", "12"))
VICTIMS = ("perpline.matcher.runner", "perpline.pipelines.accounts", "perpline.pipelines.ledger_sink",
           "perpline.risk.runner", "perpline.risk.index_feed",
           "perpline.recon.runner", "perpline.api.main", "perpline.ch.server")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory)


def _kill_when_running(stack: Stack, module: str, timeout_s: float = 60) -> str:
    """SIGKILL the component running `module`, waiting for it if it is (re)starting."""
    deadline = time.monotonic() + timeout_s
    while (killed := kill_component(stack, module)) == "nothing" and time.monotonic() < deadline:
        time.sleep(0.5)
    return killed


@pytest.mark.timeout(900)
def test_random_session_matches_the_model_through_kills(stack: Stack) -> None:
    users = [admin(stack, "create-user", "--deposit", f"USDT={DEPOSIT_USDT}") for _ in range(USERS)]
    session = RandomSession(stack.api, users, seed=20261125)  # type: ignore[arg-type]
    kills = []
    for step in range(STEPS):
        if step and step % KILL_EVERY == 0:  # each kind in turn, so every kind is killed at least once
            kills.append(_kill_when_running(stack, VICTIMS[(step // KILL_EVERY - 1) % len(VICTIMS)]))
        session.step()
    session.check_open_orders()
    assert session.compared > STEPS // 3, (session.compared, session.looked_up)
    assert set(kills) == set(VICTIMS), kills
    fees = session.check_positions_and_wallets()
    session.check_ledger(stack.clickhouse(), fees)
