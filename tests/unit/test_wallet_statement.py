"""The wallet's own statement and the repairs of breaks against it (perpline.wallet, plans.wallet_action):
a line answers to one exchange reference; each break is repaired per its direction; every repair journal
balances and, applied by the accounts processor, brings the customer's balance to what the wallet moved."""

from __future__ import annotations

from decimal import Decimal

import pytest

from perpline import wallet
from perpline.accounts import handlers as h
from perpline.accounts.state import AccountState
from perpline.contracts import ids
from perpline.contracts import messages as m
from perpline.recon import plans as p

ASSET, ACCT = "USDT", 4
META = {"trace_id": "", "causation_id": "", "ts_ms": 0}


def wallet_journal(direction: str, units: int, request_id: str = "r1") -> m.Journal:
    """The journal the processor writes for a deposit (HOT_WALLET debited) or a withdrawal (SPOT debited)."""
    amount = str(Decimal(units) / 10**8)
    hot, spot = (amount, f"-{amount}") if direction == "DEPOSIT" else (f"-{amount}", amount)
    ref = ids.wallet_cause(ACCT, request_id)
    return m.Journal(**META, journal_id=ids.journal_id(ref, direction), ref_type=direction, ref_id=ref,
                     account_id=ACCT, postings=[m.Posting(ledger_account="platform:HOT_WALLET", asset=ASSET, amount=hot),
                                                m.Posting(ledger_account=f"user:{ACCT}:SPOT", asset=ASSET, amount=spot)])


def test_a_line_answers_to_one_reference_and_names_its_journal() -> None:
    line = wallet.movement(wallet.WITHDRAWAL, ACCT, ASSET, "12.5", "wd-1", 1000)
    again = wallet.movement(wallet.WITHDRAWAL, ACCT, ASSET, "12.5", "wd-1", 2000)
    assert line.wallet_tx_id == again.wallet_tx_id != wallet.movement(wallet.DEPOSIT, ACCT, ASSET, "12.5", "wd-1",
                                                                      1000).wallet_tx_id
    assert line.amount == "12.50000000" and line.ref_id == f"wallet:{ACCT}:wd-1"
    assert dict(zip(wallet.COLUMNS, wallet.row(line), strict=True))["journal_id"] == f"wallet:{ACCT}:wd-1/WITHDRAWAL"


@pytest.mark.parametrize("asset, amount", [("DOGE", "1"), (ASSET, "0"), (ASSET, "-1"), (ASSET, "1.123456789"),
                                           (ASSET, "abc")])
def test_what_the_processor_refuses_is_no_movement(asset: str, amount: str) -> None:
    with pytest.raises(wallet.NotAMovement):
        wallet.movement(wallet.DEPOSIT, ACCT, asset, amount, "d", 0)


def test_each_break_gets_its_repair_by_direction() -> None:
    dep, wd = wallet_journal("DEPOSIT", 10**10), wallet_journal("WITHDRAWAL", 10**10)
    rows_dep, rows_wd = p.log_rows(dep), p.log_rows(wd)
    # a line with no journal: the command re-driven, whatever the log holds
    assert p.wallet_action("wallet_not_booked", "DEPOSIT", [], None) == p.REDRIVE
    # a journal with no line: a withdrawal sent now, a deposit reversed; a copy the log never had: nothing here
    assert p.wallet_action("wallet_no_statement", "WITHDRAWAL", rows_wd, wd) == p.REDRIVE
    assert p.wallet_action("wallet_no_statement", "DEPOSIT", rows_dep, dep) == p.REVERSE
    assert p.wallet_action("wallet_no_statement", "DEPOSIT", rows_dep, None) == p.NONE
    # amounts that differ: a damaged copy restored from the log, else the difference booked
    altered = [(a, s, x * 2) for a, s, x in rows_dep]
    assert p.wallet_action("wallet_amount", "DEPOSIT", altered, dep) == p.RESINK
    assert p.wallet_action("wallet_amount", "DEPOSIT", rows_dep, dep) == p.COMPENSATE
    assert p.hot_wallet_units(dep) == p.hot_wallet_units(wd) == 10**10


def test_default_policies_by_direction() -> None:
    assert p.policy_of("wallet_no_statement", "WITHDRAWAL") == p.AUTO
    assert p.policy_of("wallet_no_statement", "DEPOSIT") == p.PROPOSE
    assert p.policy_of("wallet_not_booked", "DEPOSIT") == p.AUTO
    assert p.policy_of("wallet_not_booked", "WITHDRAWAL") == p.PROPOSE
    assert p.policy_of("wallet_amount", "DEPOSIT") == p.policy_of("wallet_amount", "WITHDRAWAL") == p.PROPOSE
    assert p.policy_of("trade_fees", "TRADE_FEE") == p.PROPOSE and p.policy_of("open_interest") == p.NEVER


def post(state: AccountState, rid: str, journals: list[m.RepairJournal]) -> None:
    outs = h.handle(state, m.PostRepair(**META, request_id=f"repair:{rid}", account_id=ACCT, repair_id=rid,
                                        rule="wallet", books=True, journals=journals))
    assert [o.msg.ok for o in outs if isinstance(o.msg, m.CommandResult)] == [True]


@pytest.mark.parametrize("direction, wallet_units, ledger_units, available", [
    ("DEPOSIT", 150, 100, 150),     # the wallet received more than was credited: the user is credited the rest
    ("DEPOSIT", 60, 100, 60),       # less: the excess is taken back
    ("WITHDRAWAL", 30, 20, -30),    # the wallet sent more than was debited: the user is debited the rest
    ("WITHDRAWAL", 5, 20, -5),      # less: the excess is given back
])
def test_a_difference_balances_and_brings_the_balance_to_what_the_wallet_moved(
        direction: str, wallet_units: int, ledger_units: int, available: int) -> None:
    unit = 10**8
    journals = p.wallet_difference(direction, ACCT, ASSET, wallet_units * unit, ledger_units * unit)
    assert [p.journal_sum(j) for j in journals] == [0]
    state = AccountState(account_id=ACCT)
    h.handle(state, m.Deposit(**META, request_id="seed", account_id=ACCT, asset=ASSET, amount="1000"))
    sign = 1 if direction == "DEPOSIT" else -1
    booked = m.Deposit if direction == "DEPOSIT" else m.Withdraw
    h.handle(state, booked(**META, request_id="x", account_id=ACCT, asset=ASSET, amount=str(ledger_units)))
    assert state.balances[ASSET].available == (1000 + sign * ledger_units) * unit
    post(state, "diff", journals)
    assert state.balances[ASSET].available == (1000 + available) * unit


def test_a_reversed_deposit_takes_the_credit_back() -> None:
    state = AccountState(account_id=ACCT)
    h.handle(state, m.Deposit(**META, request_id="r1", account_id=ACCT, asset=ASSET, amount="100"))
    journals = p.reversal(p.log_rows(wallet_journal("DEPOSIT", 100 * 10**8)), label="reverse")
    post(state, "rev", journals)
    post(state, "rev", journals)  # a resend of the same request changes nothing
    assert state.balances[ASSET].available == 0
