"""Reconciliation benchmark: the reconciler's passes over a ledger of ten million postings. Prints one JSON
line; nothing here is a test.

    python -m bench.recon [--postings 10000000] [--new-postings 10000] [--accounts 20000]

1. The embedded ClickHouse (perpline.ch.server over chdb, as the stack runs it) with the project's migrations.
2. A clean ledger is generated through the accounts processor's own journal builder
   (perpline.accounts.ledger.JournalBuilder, the transfers lifecycle._settle_balances writes): one deposit
   per account, then trades on both perpetuals, each settled as two legs of a TRADE_SETTLED and a TRADE_FEE
   journal at the instrument's maker/taker rate (8 postings a trade), numbered per account, with the
   matcher's trade events and each account's last balance event. Rows come from the ledger sink's own
   functions (ledger_sink_logic.posting_rows) and are inserted as the sink inserts them (clickhouse-connect,
   a list of rows per insert), in batches of --batch-rows. Their inserted_ms is their time (history written
   as it happened, over the last --days days), so the incremental window holds only what is new.
3. A full pass (every rule over everything) is timed; then --new-postings more postings (and their trades
   and balance events) arrive, and the incremental pass the reconciler runs next (rows inserted since its
   previous start, less the overlap) is timed. Both passes must find nothing (the ledger is clean).
Targets: incremental <= 1 s, full <= 60 s; ratio = time / target (<= 1 meets it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from perpline import REPO_ROOT, wallet
from perpline.accounts import margin as mg
from perpline.accounts.ledger import JournalBuilder, platform_account, user_account
from perpline.ch.client import get_client, wait_ready
from perpline.ch.migrate import apply_migrations
from perpline.ch.users import ADMIN_USER, USERS_DIR_NAME, ensure_passwords, with_credentials
from perpline.contracts import codec, ids
from perpline.contracts import messages as m
from perpline.contracts.instruments import Instrument, load_catalog
from perpline.contracts.units import format_amount
from perpline.pipelines.ledger_sink_logic import (
    ACCOUNT_EVENT_COLUMNS,
    MATCHER_EVENT_COLUMNS,
    POSTING_COLUMNS,
)
from perpline.recon import runner
from perpline.recon.rules import SETTLE_GRACE_MS
from perpline.stack.supervisor import free_port

INCREMENTAL_TARGET_S = 1.0
FULL_TARGET_S = 60.0
POSTINGS_PER_TRADE = 8  # two legs x (TRADE_SETTLED + TRADE_FEE) x two postings
DEPOSIT_UNITS = 10**6 * 10**8  # 1,000,000 USDT per account
ASSET = "USDT"
META = {"trace_id": "bench", "causation_id": "bench"}


@dataclass
class Books:
    """What the generator must remember between batches: each account's journal number and balances,
    each symbol's matcher seq, the next trade's time."""

    accounts: int
    start_ms: int
    step_ms: int
    seq_of_account: dict[int, int] = field(default_factory=dict)
    wallet: dict[int, int] = field(default_factory=dict)
    matcher_seq: dict[str, int] = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)  # accounts whose balance moved since the last balance events
    trades: int = 0

    def next_seq(self, account_id: int) -> int:
        self.seq_of_account[account_id] = self.seq_of_account.get(account_id, 0) + 1
        return self.seq_of_account[account_id]


def account_id(n: int) -> int:
    return 1_000_000 + n


def journal_rows(builder: JournalBuilder, books: Books, ts_ms: int, offset: int) -> list[list[Any]]:
    """The builder's journal as the sink's rows (ledger_sink_logic.posting_rows, less its re-check that the
    journal balances: the builder asserted it, and the check would double the generation time)."""
    journal = builder.build("bench", "bench", ts_ms, books.next_seq(builder.account_id))
    assert journal is not None
    partition = builder.account_id % 8
    return [[journal.journal_id, i, journal.ref_type, journal.ref_id, journal.account_id, journal.symbol,
             p.ledger_account, p.asset, Decimal(p.amount), journal.trace_id, journal.causation_id, journal.ts_ms,
             partition, offset, journal.account_seq] for i, p in enumerate(journal.postings)]


def deposits(books: Books) -> list[list[Any]]:
    out = []
    for n in range(books.accounts):
        acct = account_id(n)
        builder = JournalBuilder("DEPOSIT", ids.wallet_cause(acct, f"seed-{acct}"), acct, ASSET).transfer(
            platform_account("HOT_WALLET"), user_account(acct, "SPOT"), DEPOSIT_UNITS)
        books.wallet[acct] = DEPOSIT_UNITS
        out += journal_rows(builder, books, books.start_ms, n)
    return out


def leg_rows(books: Books, inst: Instrument, seq: int, acct: int, liquidity: str, price_ticks: int, qty_lots: int,
             ts_ms: int) -> list[list[Any]]:
    """One settled leg as the accounts processor journals it: the position's margin from SPOT, the fee to
    FEE_REVENUE at the instrument's rate (lifecycle._settle_balances)."""
    notional = inst.notional(price_ticks, qty_lots)
    new_margin = mg.initial_margin(notional, inst.default_leverage)
    fee = mg.fee(notional, inst.maker_fee_e8 if liquidity == "MAKER" else inst.taker_fee_e8)
    leg_id = ids.fill_leg_id(inst.symbol, seq, liquidity)
    spot, pos_m = user_account(acct, "SPOT"), user_account(acct, "POSITION_MARGIN")
    settled = JournalBuilder("TRADE_SETTLED", leg_id, acct, ASSET, inst.symbol).transfer(spot, pos_m, new_margin)
    charged = JournalBuilder("TRADE_FEE", leg_id, acct, ASSET, inst.symbol).transfer(
        spot, platform_account("FEE_REVENUE"), fee)
    books.wallet[acct] -= fee
    books.touched.add(acct)
    return journal_rows(settled, books, ts_ms, seq) + journal_rows(charged, books, ts_ms, seq)


def trade(books: Books, inst: Instrument) -> tuple[list[list[Any]], list[Any]]:
    """The next trade on `inst` between two accounts: its postings and its matcher event row."""
    n = books.trades
    books.trades += 1
    seq = books.matcher_seq[inst.symbol] = books.matcher_seq.get(inst.symbol, 0) + 1
    maker, taker = account_id(n % books.accounts), account_id((n * 7 + 1) % books.accounts)
    if maker == taker:
        taker = account_id((n + 1) % books.accounts)
    price_ticks = inst.index_start_ticks or 500_000
    price_ticks += (n % 200) - 100
    qty_lots = 1 + n % 5
    ts_ms = books.start_ms + n * books.step_ms
    event = m.Trade(**META, ts_ms=ts_ms, symbol=inst.symbol, seq=seq, trade_id=seq,
                    price=inst.format_price(price_ticks), quantity=inst.format_qty(qty_lots), taker_side="BUY",
                    taker_order_id=2 * n + 2, taker_account_id=taker, taker_leaves="0", maker_order_id=2 * n + 1,
                    maker_account_id=maker, maker_leaves="0")
    raw = codec.encode(event)
    rows = (leg_rows(books, inst, seq, maker, "MAKER", price_ticks, qty_lots, ts_ms)
            + leg_rows(books, inst, seq, taker, "TAKER", price_ticks, qty_lots, ts_ms))
    return rows, [inst.symbol, seq, "trade", "bench", "bench", ts_ms, raw.decode()]


def batches(books: Books, trades: int, batch_rows: int) -> Iterator[tuple[list[list[Any]], list[list[Any]]]]:
    """(postings, matcher events) of `trades` trades, round-robin over the perpetuals, `batch_rows` at a time."""
    instruments = list(load_catalog().instruments.values())
    postings: list[list[Any]] = []
    events: list[list[Any]] = []
    for k in range(trades):
        rows, event = trade(books, instruments[k % len(instruments)])
        postings += rows
        events.append(event)
        if len(postings) >= batch_rows:
            yield postings, events
            postings, events = [], []
    if postings:
        yield postings, events


def balance_rows(books: Books, accounts: list[int], ts_ms: int, offset0: int) -> list[list[Any]]:
    """Each account's last balance event (what ledger_vs_state compares the ledger with)."""
    out = []
    for k, acct in enumerate(accounts):
        wallet = books.wallet[acct]
        event = m.BalanceChanged(**META, ts_ms=ts_ms, account_id=acct, asset=ASSET, available=format_amount(wallet),
                                 order_margin="0", position_margin="0", wallet=format_amount(wallet),
                                 version=books.seq_of_account[acct])
        out.append(event_row(event, acct % 8, offset0 + k))
    return out


def event_row(event: m.BalanceChanged, partition: int, offset: int) -> list[Any]:
    raw = codec.encode(event)
    return [partition, offset, event.account_id, "balance", event.trace_id, event.causation_id, event.ts_ms,
            raw.decode()]


def insert(client: Any, table: str, rows: list[list[Any]], columns: list[str], inserted_ms: int | None) -> None:
    """As the ledger sink inserts (a list of rows); a historical row carries the time it would have arrived."""
    if inserted_ms is None:
        client.insert(table, rows, column_names=columns)
        return
    client.insert(table, [[*r, inserted_ms] for r in rows], column_names=[*columns, "inserted_ms"])


def load(client: Any, books: Books, trades: int, batch_rows: int, historical: bool) -> int:
    """Postings and matcher events of `trades` trades into ClickHouse; returns the postings written."""
    written = 0
    for postings, events in batches(books, trades, batch_rows):
        at_ms = postings[-1][11] if historical else None  # ts_ms of the batch's last row
        insert(client, "ledger_postings", postings, POSTING_COLUMNS, at_ms)
        insert(client, "matcher_events", events, MATCHER_EVENT_COLUMNS, at_ms)
        written += len(postings)
    return written


def timed_pass(recon: runner.Reconciler, full: bool) -> tuple[float, list[Any], dict[str, float]]:
    started = time.perf_counter()
    found = recon.run(full=full)
    seconds = time.perf_counter() - started
    per_rule = {r.name: round(runner.RULE_SECONDS.labels(r.name)._value.get(), 3) for r in recon.rules}
    return seconds, found, per_rule


def statement_rows(books: Books) -> list[list[Any]]:
    """The wallet's own statement line for each seed deposit (what perpline.wallet writes for a real
    one): without them every deposit is a `wallet_no_statement` break, which no real stack has."""
    return [wallet.row(wallet.movement(wallet.DEPOSIT, account_id(n), ASSET, format_amount(DEPOSIT_UNITS),
                                       f"seed-{account_id(n)}", books.start_ms)) for n in range(books.accounts)]


def seed(client: Any, args: argparse.Namespace) -> tuple[Books, int]:
    """The historical ledger: deposits, their wallet statement, `--postings` worth of trades, balances."""
    trades = max(1, (args.postings - 2 * args.accounts) // POSTINGS_PER_TRADE)
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - args.days * 86_400_000
    books = Books(args.accounts, start_ms, max(1, (args.days * 86_400_000 - 60_000) // trades))
    insert(client, "ledger_postings", deposits(books), POSTING_COLUMNS, start_ms)
    insert(client, "wallet_statement", statement_rows(books), wallet.COLUMNS, start_ms)
    written = 2 * args.accounts + load(client, books, trades, args.batch_rows, historical=True)
    accounts = [account_id(n) for n in range(args.accounts)]
    insert(client, "account_events", balance_rows(books, accounts, now_ms - 60_000, 0), ACCOUNT_EVENT_COLUMNS,
           now_ms - 60_000)
    books.touched.clear()
    return books, written


def measure(client: Any, args: argparse.Namespace, kept: Path | None) -> dict[str, Any]:
    apply_migrations(client)
    recon = runner.Reconciler(client, None)
    recon.publish_instruments()
    t0 = time.perf_counter()
    if kept is not None and kept.exists():  # --keep: the ledger of an earlier run, and where its generator was
        books, written = pickle.loads(kept.read_bytes()), 0  # noqa: S301 (a file this bench wrote itself)
    else:
        books, written = seed(client, args)
        if kept is not None:
            kept.write_bytes(pickle.dumps(books))
    load_s = time.perf_counter() - t0
    if args.optimize:
        client.command("OPTIMIZE TABLE ledger_postings FINAL")
    full_s, full_found, full_rules = timed_pass(recon, full=True)

    # what arrives next: new trades now, then the reconciler's next pass once the settlement grace is over
    books.start_ms, books.step_ms = int(time.time() * 1000), 1
    recon.last_start_ms = int(time.time() * 1000)
    new_trades = max(1, args.new_postings // POSTINGS_PER_TRADE)
    added = load(client, books, new_trades, args.batch_rows, historical=False)
    insert(client, "account_events", balance_rows(books, sorted(books.touched), books.start_ms, args.accounts),
           ACCOUNT_EVENT_COLUMNS, None)
    time.sleep(SETTLE_GRACE_MS / 1000 + 0.5)
    inc_s, inc_found, inc_rules = timed_pass(recon, full=False)
    if kept is not None:
        kept.write_bytes(pickle.dumps(books))
    total = client.query("SELECT count() FROM ledger_postings").result_rows[0][0]
    return {"postings": int(total), "generated_postings": written, "new_postings": added, "trades": books.trades,
            "accounts": args.accounts, "load_s": round(load_s, 1),
            "full_s": round(full_s, 3), "incremental_s": round(inc_s, 3),
            "full_vs_target": round(full_s / FULL_TARGET_S, 3),
            "incremental_vs_target": round(inc_s / INCREMENTAL_TARGET_S, 3),
            "targets_met": full_s <= FULL_TARGET_S and inc_s <= INCREMENTAL_TARGET_S,
            "breaks_full": len(full_found), "breaks_incremental": len(inc_found),
            "break_rules": sorted({b.rule for b in full_found + inc_found}),
            "full_rule_s": full_rules, "incremental_rule_s": inc_rules}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recon")
    parser.add_argument("--postings", type=int, default=10_000_000)
    parser.add_argument("--new-postings", type=int, default=10_000)
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--batch-rows", type=int, default=400_000)
    parser.add_argument("--optimize", action="store_true", help="merge the table before the passes")
    parser.add_argument("--keep", type=Path, default=None,
                        help="a directory that keeps the ledger: the first run fills it, later runs reuse it")
    args = parser.parse_args(argv)
    port = free_port()
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="perpline-bench-recon-"))
        else:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        password = ensure_passwords(Path(tmp) / USERS_DIR_NAME)[ADMIN_USER]
        server = subprocess.Popen([sys.executable, "-m", "perpline.ch.server", "--data-dir", f"{tmp}/ch", "--port",
                                   str(port)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = with_credentials(f"http://127.0.0.1:{port}", ADMIN_USER, password)
            wait_ready(url, timeout_s=60)
            kept = Path(tmp) / "books.pickle" if args.keep is not None else None
            report = measure(get_client(url, send_receive_timeout=600), args, kept)
        finally:
            server.terminate()
            server.wait(30)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
