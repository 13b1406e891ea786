"""Repairs never create money: over random faults on a random ledger, every repair journal balances,
the accounts processor applies each once (a resend changes nothing), refuses an unbalanced or foreign
one, and after the repairs the ledger's copy equals the log and the trial balance holds."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from perpline.accounts import handlers as h
from perpline.accounts.state import AccountState
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.recon import plans as p

ASSET = "USDT"


def journal(jid: str, acct: int, pairs: list[tuple[str, str, int]]) -> m.Journal:
    postings = []
    for debit, credit, cents in pairs:
        amount = Decimal(cents) / 100
        postings += [m.Posting(ledger_account=debit, asset=ASSET, amount=str(amount)),
                     m.Posting(ledger_account=credit, asset=ASSET, amount=str(-amount))]
    return m.Journal(trace_id="", causation_id="", ts_ms=0, journal_id=jid, ref_type="X", ref_id=jid, account_id=acct,
                     postings=postings)


def random_log(rng: random.Random) -> dict[str, m.Journal]:
    accounts = ["platform:HOT_WALLET", "platform:FEE_REVENUE"]
    log = {}
    for n in range(rng.randint(3, 12)):
        acct = rng.randint(1, 3)
        spot = f"user:{acct}:SPOT"
        pairs = [(rng.choice(accounts), spot, rng.randint(1, 10**6)) for _ in range(rng.randint(1, 3))]
        log[f"j{n}"] = journal(f"j{n}", acct, pairs)
    return log


def rows(j: m.Journal) -> list[p.Row]:
    return p.log_rows(j)


def inject(rng: random.Random, log: dict[str, m.Journal]) -> tuple[dict[str, list[p.Row]], dict[str, int]]:
    """The ledger's copy with random faults: a journal copied under a new id, a movement no command
    caused, a posting altered, a journal dropped."""
    copy = {jid: rows(j) for jid, j in log.items()}
    owner = {jid: j.account_id for jid, j in log.items()}
    for n in range(rng.randint(1, 4)):
        kind, victim = rng.choice(["copy", "fake", "alter", "drop"]), rng.choice(sorted(log))
        if victim not in copy:
            continue
        if kind == "copy":
            copy[f"{victim}-copy{n}"], owner[f"{victim}-copy{n}"] = rows(log[victim]), owner[victim]
        elif kind == "fake":
            acct = rng.randint(1, 3)
            copy[f"fake{n}"] = rows(journal(f"fake{n}", acct, [("platform:FEE_REVENUE", f"user:{acct}:SPOT", 500)]))
            owner[f"fake{n}"] = acct
        elif kind == "alter":
            acct_, asset, amount = copy[victim][0]
            copy[victim] = [(acct_, asset, amount + 1), *copy[victim][1:]]
        else:
            del copy[victim]
    return copy, owner


def total(ledger: dict[str, list[p.Row]]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for postings in ledger.values():
        for acct, _, amount in postings:
            out[acct] = out.get(acct, Decimal(0)) + amount
    return out


@pytest.mark.parametrize("seed", range(200))
def test_repairs_never_create_money(seed: int) -> None:
    rng = random.Random(seed)
    log = random_log(rng)
    copy, owner = inject(rng, log)
    states = {a: AccountState(account_id=a) for a in (1, 2, 3)}
    for jid in sorted(set(copy) | set(log)):
        stored = copy.get(jid, [])
        action = p.classify(stored, log.get(jid))
        if action == p.RESINK:
            copy[jid] = rows(log[jid])
        elif action == p.VOID:
            repair = p.reversal(stored)
            assert all(p.journal_sum(j) == 0 for j in repair)
            cmd = m.PostRepair(trace_id="", causation_id="", ts_ms=1, request_id=f"repair:{jid}", account_id=owner[jid],
                               repair_id=jid, rule="duplicate_cause", journals=repair)
            outs = h.handle(states[owner[jid]], cmd)
            posted = [o.msg for o in outs if isinstance(o.msg, m.Journal)]
            assert posted and all(sum(Decimal(x.amount) for x in j.postings) == 0 for j in posted)
            assert not [o for o in h.handle(states[owner[jid]], cmd) if isinstance(o.msg, m.Journal)]  # once only
            for j in posted:
                copy[j.journal_id] = rows(j)
    assert all(s.balances.get(ASSET) is None or s.balances[ASSET].wallet == 0 for s in states.values())  # books untouched
    want, got = total({k: rows(v) for k, v in log.items()}), total(copy)
    assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if v}  # the copy nets to the log
    assert sum(got.values(), Decimal(0)) == 0  # trial balance


def test_fee_compensation_balances_and_moves_the_books() -> None:
    stored = [("user:4:SPOT", ASSET, Decimal("7.5")), ("platform:FEE_REVENUE", ASSET, Decimal("-7.5"))]
    journals = p.fee_compensation(stored, 4, ASSET, 250_000_000)  # the right fee: 2.5
    assert [p.journal_sum(j) for j in journals] == [0, 0]
    state = AccountState(account_id=4)
    h.handle(state, m.Deposit(trace_id="", causation_id="", ts_ms=0, request_id="d", account_id=4, asset=ASSET, amount="100"))
    h.handle(state, m.PostRepair(trace_id="", causation_id="", ts_ms=1, request_id="repair:f", account_id=4,
                                 repair_id="f", rule="trade_fees", books=True, journals=journals))
    assert state.balances[ASSET].available == 105 * 10**8  # 7.5 charged back, 2.5 charged


@pytest.mark.parametrize("journals, code", [
    ([m.RepairJournal(label="x", postings=[m.Posting(ledger_account="user:4:SPOT", asset=ASSET, amount="1")])],
     Code.JOURNAL_UNBALANCED),
    ([m.RepairJournal(label="x", postings=[m.Posting(ledger_account="user:5:SPOT", asset=ASSET, amount="1"),
                                           m.Posting(ledger_account="platform:FEE_REVENUE", asset=ASSET, amount="-1")])],
     Code.MALFORMED),
])
def test_a_bad_repair_is_refused_and_changes_nothing(journals: list[m.RepairJournal], code: Code) -> None:
    state = AccountState(account_id=4)
    outs = h.handle(state, m.PostRepair(trace_id="", causation_id="", ts_ms=1, request_id="repair:bad", account_id=4,
                                        repair_id="bad", rule="x", books=True, journals=journals))
    assert [o.msg.code for o in outs if isinstance(o.msg, m.CommandResult)] == [int(code)]
    assert not [o for o in outs if isinstance(o.msg, m.Journal)] and state.journal_seq == 0


def test_an_unbalanced_journal_is_never_reversed() -> None:
    with pytest.raises(AssertionError):
        p.reversal([("user:1:SPOT", ASSET, Decimal("1"))])
