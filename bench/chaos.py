"""Whole-system chaos: the random session against the model while components die at random.

    python -m bench.chaos [--minutes 10] [--kill-every-s 5] [--seed N]

Starts the plain stack (free ports, temporary data dir), funds three users, and runs the seeded random
session of bench/session.py (orders of every kind, amends, cancels, deposits and withdrawals through
/fapi and the native wallet, each answer checked against the naive book) for `--minutes`. Meanwhile a
thread SIGKILLs one component every `--kill-every-s` seconds, chosen at random among every kind but the
embedded broker (whose data is in memory: its death stops the stack): matcher, accounts,
ledger sink, risk, index feed, reconciler, the API (clients resend with the same client order id or
Idempotency-Key) and the embedded ClickHouse server. No kind is killed twice within
MIN_GAP_PER_KIND_S, so the supervisor's restart budget (5 deaths a minute) is never what stops it.

An order read back that has not reached the model's outcome within 120 s while components keep dying
(a pipeline restarting faster than it is killed is not guaranteed at one kill every few seconds on two
cores) is checked again with the killing paused for up to SETTLE_S: reaching it then counts as slow
(`read_backs_slower_than_120_s_under_faults`); not reaching it is a failure, as is any other mismatch.

Then, with the killing stopped: open orders, positions and wallets equal the model's, long == short,
every journal sums to zero, FEE_REVENUE equals the fees charged, and every reconciliation rule is clean
on a full pass. Prints one JSON line; exits 1 if a check failed. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.api import plain_stack
from bench.load import check_books, make_users
from bench.session import DEPOSIT_USDT, RandomSession

VICTIMS = ("perpline.matcher.runner", "perpline.pipelines.accounts", "perpline.pipelines.ledger_sink",
           "perpline.risk.runner", "perpline.risk.index_feed",
           "perpline.recon.runner", "perpline.api.main", "perpline.ch.server")
MIN_GAP_PER_KIND_S = 15.0
SETTLE_S = 180.0
USERS = 3


def stack_processes(root_pid: int) -> dict[int, str]:
    """pid -> command line of every descendant of the stack's supervisor."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                continue
    found, frontier = {}, [root_pid]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                try:
                    found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                frontier.append(pid)
    return found


class Killer(threading.Thread):
    """SIGKILLs a random component of the stack every `every_s` seconds until stopped."""

    def __init__(self, root_pid: int, every_s: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.every_s, self.rng = root_pid, every_s, random.Random(seed)
        self.kills: dict[str, int] = {}
        self.last: dict[str, float] = {}
        self.stopped = threading.Event()
        self.paused = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            if self.paused.is_set():
                continue
            now = time.monotonic()
            ready = [v for v in VICTIMS if now - self.last.get(v, -1e9) >= MIN_GAP_PER_KIND_S]
            if ready:
                self._kill(self.rng.choice(ready), now)

    def _kill(self, module: str, now: float) -> None:
        for pid, cmdline in stack_processes(self.root_pid).items():
            if f"-m {module} " in cmdline + " ":
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    return
                self.kills[module] = self.kills.get(module, 0) + 1
                self.last[module] = now
                return


def run(minutes: float, kill_every_s: float, seed: int) -> dict[str, Any]:
    with plain_stack("perpline-chaos-") as (tmp, api, kafka, clickhouse):
        users = make_users(USERS, kafka, tmp, deposit=f"USDT={DEPOSIT_USDT}")
        session = RandomSession(api, users, seed)
        killer = Killer(_supervisor_pid(tmp), kill_every_s, seed)
        started = time.monotonic()
        killer.start()
        failure, slow = None, 0
        while failure is None and time.monotonic() - started < minutes * 60:
            try:
                session.step()
            except AssertionError as exc:
                failure = _after_faults_stop(session, killer, exc)
                slow += failure is None
        killer.stopped.set()
        killer.join()
        report: dict[str, Any] = {"minutes": round((time.monotonic() - started) / 60, 1), "steps": session.steps,
                                  "kills": sum(killer.kills.values()), "kills_by_kind": killer.kills,
                                  "answers_compared": session.compared, "answers_looked_up": session.looked_up,
                                  "read_backs_slower_than_120_s_under_faults": slow}
        checks: dict[str, Any] = {}
        try:
            if failure is None:
                session.check_open_orders()
                checks["open_orders_equal_model"] = True
                fees = session.check_positions_and_wallets()
                checks["positions_wallets_equal_model_long_equals_short"] = True
                session.check_ledger(clickhouse, fees)
                checks["journals_balanced_fee_revenue_equals_fees"] = True
        except AssertionError as exc:
            failure = f"end check: {exc}"
        report["checks"] = checks
        try:
            report["books"] = check_books(clickhouse, tmp)
        except Exception as exc:  # noqa: BLE001 (a stack that stopped: say so in the report)
            report["books"] = {"recon_breaks": {"unreadable": str(exc)[:200]}}
        report["failure"] = failure
        return report


def _after_faults_stop(session: RandomSession, killer: Killer, exc: AssertionError) -> str | None:
    """An order read back that did not reach the model's outcome in 120 s while components kept dying is
    checked again with the killing paused (up to SETTLE_S): reaching it then was slow, not wrong (None);
    not reaching it, or any other mismatch, is the failure."""
    if session.pending is None:
        return f"step {session.steps}: {exc}"
    killer.paused.set()
    try:
        session.retry_pending(SETTLE_S)
    except AssertionError as again:
        return f"step {session.steps}, {SETTLE_S:.0f} s after the faults stopped: {again}"
    finally:
        killer.paused.clear()
    return None


def _supervisor_pid(data_dir: str) -> int:
    """The `perpline up` process whose data dir this is (the stack's root)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "perpline.cli up" in cmdline and data_dir in cmdline:
                return int(entry.name)
    raise RuntimeError("no supervisor found for " + data_dir)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=20261207)
    args = parser.parse_args()
    assert args.minutes > 0 and args.kill_every_s > 0
    report = run(args.minutes, args.kill_every_s, args.seed)
    print(json.dumps(report))
    sys.exit(0 if report["failure"] is None and not report["books"]["recon_breaks"] else 1)


if __name__ == "__main__":
    main()
