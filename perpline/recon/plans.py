"""What repairs a break: pure decisions and journal arithmetic (no ClickHouse, no broker), so a property
test can run them over random faults (docs/reconciliation.md, "Repairs").

The source of truth for a journal is the ledger.entries log the accounts processor wrote (ClickHouse
holds a copy). Comparing the copy with the log decides the repair of a journal-level break:
- the log has the journal and the copy differs (altered, or missing): RESINK, the copy is restored
  from the log (ledger_postings keeps the newest row of a posting);
- the log never had it (a copy under a new id, a movement no command caused): VOID, a RECON_REPAIR
  journal reverses it in the ledger only (the processor's balances never included it);
- the log has it exactly (the processor itself wrote it wrong, e.g. a fee at a wrong rate):
  COMPENSATE, a reversal and the correct entry recomputed from the matcher's trade, and the processor's
  balances move with them.
Every journal a plan builds sums to zero per asset: asserted here, where it is built.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal

from perpline.accounts import margin as mg
from perpline.contracts import messages as m
from perpline.contracts.instruments import load_catalog
from perpline.contracts.units import format_amount, parse_amount

RESINK, VOID, COMPENSATE, REDRIVE, HALT, NONE = "resink", "void", "compensate", "redrive", "halt", "none"
REVERSE = "reverse"  # a movement the processor booked and the wallet never made: undone, balances too
AUTO, PROPOSE, NEVER = "auto", "propose", "never"

# The default policy per rule (docs/reconciliation.md says why). A rule not named: NEVER.
POLICIES = {
    "journal_balanced": AUTO,    # only ever a restore from the log: the log is the record
    "duplicate_cause": AUTO,     # the log proves the copy was never written by the processor
    "trade_settlement": AUTO,    # a re-drive is a no-op where the leg arrived; a restore copies the log
    "trade_fees": PROPOSE,       # may move a customer's balance (COMPENSATE): an operator decides
    "wallet_legs": PROPOSE,      # money in or out of the hot wallet: an operator checks the wallet
    "matcher_sequence": NEVER,   # the source of truth itself is in doubt: halt the symbol
    "wallet_amount": PROPOSE,    # the wallet's amount wins, moving a customer's balance: an operator decides
}
# Rules against the wallet's own statement: the policy depends on the direction of the movement
# (docs/reconciliation.md, "The wallet's statement", says why).
WALLET_RULES = ("wallet_no_statement", "wallet_not_booked", "wallet_amount")
DIRECTION_POLICIES = {
    ("wallet_no_statement", "WITHDRAWAL"): AUTO,  # debited, never sent: the wallet sends it (once per reference)
    ("wallet_no_statement", "DEPOSIT"): PROPOSE,  # credited, never received: taking it back is an operator's call
    ("wallet_not_booked", "DEPOSIT"): AUTO,       # received, never credited: the Deposit re-driven (idempotent)
    ("wallet_not_booked", "WITHDRAWAL"): PROPOSE, # sent, never debited: debiting the customer is an operator's call
}
JOURNAL_RULES = ("journal_balanced", "duplicate_cause", "trade_fees", "wallet_legs")

Row = tuple[str, str, Decimal]  # (ledger_account, asset, amount) of one stored posting


def repair_id(key: tuple[object, ...], first_ms: int) -> str:
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
    return f"r{digest}{first_ms:x}"


def policy_of(rule: str, ref_type: str = "") -> str:
    return DIRECTION_POLICIES.get((rule, ref_type), POLICIES.get(rule, NEVER))


def classify(stored: list[Row], logged: m.Journal | None) -> str:
    """RESINK, VOID or COMPENSATE for one journal: its copy in ClickHouse against the log's."""
    if logged is None:
        return VOID
    if stored != log_rows(logged):
        return RESINK
    return COMPENSATE


def log_rows(journal: m.Journal) -> list[Row]:
    return [(p.ledger_account, p.asset, Decimal(p.amount)) for p in journal.postings]


def balanced(rows: list[Row]) -> bool:
    return all(sum((a for _, asset_, a in rows if asset_ == asset), Decimal(0)) == 0 for asset in {r[1] for r in rows})


def reversal(rows: list[Row], label: str = "reverse") -> list[m.RepairJournal]:
    """The journals that undo `rows` (one per asset). Refuses an unbalanced journal: undoing it would
    be an unbalanced journal too, and no repair may create money."""
    assert rows and balanced(rows), "only a balanced journal can be reversed"
    out = []
    for asset in sorted({r[1] for r in rows}):
        postings = [m.Posting(ledger_account=acct, asset=asset, amount=format_amount(-parse_amount(str(a), allow_negative=True)))
                    for acct, a_asset, a in rows if a_asset == asset]
        out.append(m.RepairJournal(label=label if len(out) == 0 else f"{label}-{asset}", postings=postings))
    assert all(journal_sum(j) == 0 for j in out), "unbalanced repair journal"
    return out


def journal_sum(journal: m.RepairJournal) -> int:
    return sum(parse_amount(p.amount, allow_negative=True) for p in journal.postings)


def expected_fee(trade: m.Trade, liquidity: str, liquidation: bool) -> int:
    """The fee of one leg recomputed from the matcher's trade and the instrument's rates (as the accounts
    processor charges it: rounded up; a liquidation leg pays none)."""
    inst = load_catalog().instruments[trade.symbol]
    if liquidation:
        return 0
    rate = inst.maker_fee_e8 if liquidity == "MAKER" else inst.taker_fee_e8
    return mg.fee(inst.notional(inst.parse_price(trade.price), inst.parse_qty(trade.quantity)), rate)


def fee_compensation(rows: list[Row], account_id: int, asset: str, fee: int) -> list[m.RepairJournal]:
    """A wrong TRADE_FEE: its reversal, then the correct fee (the user's SPOT -> FEE_REVENUE)."""
    correct = m.RepairJournal(label="correct", postings=[
        m.Posting(ledger_account=f"user:{account_id}:SPOT", asset=asset, amount=format_amount(fee)),
        m.Posting(ledger_account="platform:FEE_REVENUE", asset=asset, amount=format_amount(-fee))])
    journals = reversal(rows) + ([correct] if fee else [])
    assert all(journal_sum(j) == 0 for j in journals), "unbalanced repair journal"
    return journals


def wallet_action(rule: str, direction: str, stored: list[Row], logged: m.Journal | None) -> str:
    """The repair of a break against the wallet's statement. The wallet's line is the truth of what moved; the
    ledger.entries log is the truth of what the processor booked:
    - a line with no journal: REDRIVE, the Deposit / Withdraw command again under its request id (a no-op
      where the processor applied it; the copy is then restored from the log);
    - a journal the log never had: NONE here (wallet_legs / duplicate_cause void that copy);
    - a journal with no line: a withdrawal is sent by the wallet now (REDRIVE), a deposit is REVERSED;
    - amounts that differ: a copy that differs from the log is restored (RESINK), else the difference is
      booked (COMPENSATE)."""
    if rule == "wallet_not_booked":
        return REDRIVE
    kind = classify(stored, logged)
    if kind == VOID:
        return NONE
    if rule == "wallet_amount":
        return kind
    return REDRIVE if direction == "WITHDRAWAL" else REVERSE


def hot_wallet_units(journal: m.Journal) -> int:
    """What a DEPOSIT / WITHDRAWAL journal moved through the wallet, positive (a deposit debits HOT_WALLET)."""
    hot = sum(parse_amount(x.amount, allow_negative=True) for x in journal.postings
              if x.ledger_account == "platform:HOT_WALLET")
    return hot if journal.ref_type == "DEPOSIT" else -hot


def wallet_difference(direction: str, account_id: int, asset: str, wallet_units: int,
                      ledger_units: int) -> list[m.RepairJournal]:
    """The journal that makes the ledger's movement equal the wallet's: the difference between HOT_WALLET and
    the user's SPOT (a deposit the wallet received more of credits the user; a withdrawal it sent more of
    debits the user)."""
    diff = wallet_units - ledger_units
    assert diff != 0, "no difference to book"
    hot = diff if direction == "DEPOSIT" else -diff
    out = [m.RepairJournal(label="difference", postings=[
        m.Posting(ledger_account="platform:HOT_WALLET", asset=asset, amount=format_amount(hot)),
        m.Posting(ledger_account=f"user:{account_id}:SPOT", asset=asset, amount=format_amount(-hot))])]
    assert all(journal_sum(j) == 0 for j in out), "unbalanced repair journal"
    return out


@dataclass(frozen=True)
class Instructions:
    """What an operator must look at for a break no repair may mend on its own."""

    text: str


def instructions_for(rule: str, symbol: str, detail: str) -> Instructions:
    if rule == "matcher_sequence":
        return Instructions(
            f"{symbol} is halted (new orders refused, cancels allowed): matcher.events of {symbol} does not hold "
            f"seq 1..N ({detail}). Compare the matcher's WAL and snapshot with matcher.events and the ClickHouse "
            f"copy (matcher_events); when the events are whole again, `perpline recon resume {symbol}`.")
    return Instructions(f"{rule}: {detail}. No automatic repair: it follows from another break (see the other "
                        f"repairs of this pass) or needs an operator to find the cause.")
