"""Reconciliation repairs in the accounts processor (docs/reconciliation.md, perpline.recon.repairs).

A repair never edits history: it posts RECON_REPAIR journals, through this processor (the single writer
of the account) so the account's journal numbering, its balances and the ledger stay one story. A
PostRepair arrives with a request id, so the request memory makes a resend a no-op. Every journal is
checked before anything changes: one asset, sums to zero, touches only this account's user accounts and
platform accounts. `books` says whether this processor's balances were wrong too (they move with the
journals) or only the ledger's copy was (balances stay: the journals bring the ledger back to them).
"""

from __future__ import annotations

from dataclasses import dataclass

from perpline.accounts import requests as rq
from perpline.accounts.journals import Ctx, journal
from perpline.accounts.memory import Memory
from perpline.accounts.requests import Reject
from perpline.accounts.state import AccountState, RequestOutcome
from perpline.accounts.views import balance_changed
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.contracts.instruments import load_catalog
from perpline.contracts.units import UnitError, parse_amount

REF_TYPE = "RECON_REPAIR"
MAX_REPAIR_JOURNALS = 8
PLATFORM_KINDS = ("HOT_WALLET", "FEE_REVENUE", "PNL_CLEARING", "INSURANCE_FUND", "FUNDING_CLEARING")
USER_KINDS = ("SPOT", "ORDER_MARGIN", "POSITION_MARGIN")


def ref_id(repair_id: str, label: str) -> str:
    """The cause of one repair journal: its journal id is "<ref_id>/RECON_REPAIR" (contracts.ids)."""
    return f"repair:{repair_id}:{label}"


@dataclass(slots=True)
class RepairPlan:
    cmd: m.PostRepair
    journals: list[tuple[str, str, list[tuple[str, int]]]]
    deltas: dict[str, dict[str, int]]


def check_repair(state: AccountState, cmd: m.PostRepair, memory: Memory) -> RepairPlan:
    """Every journal checked, and the balances it would move, before anything changes."""
    if not cmd.journals or len(cmd.journals) > MAX_REPAIR_JOURNALS:
        raise Reject(Code.MALFORMED, f"a repair posts 1 to {MAX_REPAIR_JOURNALS} journals")
    parsed = [_checked(state, j) for j in cmd.journals]
    deltas = _balance_deltas(parsed) if cmd.books else {}
    _check_frozen(state, deltas)
    return RepairPlan(cmd, parsed, deltas)


def apply_repair(state: AccountState, plan: RepairPlan, ctx: Ctx) -> RequestOutcome:
    for (label, asset, postings) in plan.journals:
        builder = journal(ctx, state, REF_TYPE, ref_id(plan.cmd.repair_id, label), asset, plan.cmd.symbol)
        builder.postings.extend(postings)
        assert sum(amount for _, amount in builder.postings) == 0, "unbalanced repair journal"
    for asset, kinds in plan.deltas.items():
        bal = state.balance(asset)
        bal.available -= kinds.get("SPOT", 0)  # a debit (positive) lowers a liability
        bal.order_margin -= kinds.get("ORDER_MARGIN", 0)
        bal.position_margin -= kinds.get("POSITION_MARGIN", 0)
        balance_changed(state, ctx, asset)
    return rq.accepted()


def _checked(state: AccountState, journal: m.RepairJournal) -> tuple[str, str, list[tuple[str, int]]]:
    assets = {p.asset for p in journal.postings}
    if len(assets) != 1 or next(iter(assets)) not in load_catalog().assets:
        raise Reject(Code.UNKNOWN_ASSET, f"repair journal {journal.label!r} must use one known asset")
    if not journal.label or len(journal.label) > 32 or not journal.postings:
        raise Reject(Code.MALFORMED, "a repair journal needs a label (1-32 characters) and postings")
    try:
        postings = [(p.ledger_account, parse_amount(p.amount, allow_negative=True)) for p in journal.postings]
    except UnitError as err:
        raise Reject(err.code, err.msg) from err
    for account, _ in postings:
        if not _allowed(state.account_id, account):
            raise Reject(Code.MALFORMED, f"a repair of account {state.account_id} cannot post to {account}")
    if sum(amount for _, amount in postings) != 0:
        raise Reject(Code.JOURNAL_UNBALANCED, f"repair journal {journal.label!r} does not sum to zero")
    return journal.label, next(iter(assets)), postings


def _allowed(account_id: int, ledger_account: str) -> bool:
    parts = ledger_account.split(":")
    if parts[0] == "platform":
        return len(parts) == 2 and parts[1] in PLATFORM_KINDS
    return len(parts) == 3 and parts[0] == "user" and parts[1] == str(account_id) and parts[2] in USER_KINDS


def _balance_deltas(parsed: list[tuple[str, str, list[tuple[str, int]]]]) -> dict[str, dict[str, int]]:
    """Per asset and user account kind, the net of the repair's postings (debit positive)."""
    deltas: dict[str, dict[str, int]] = {}
    for _, asset, postings in parsed:
        for account, amount in postings:
            if account.startswith("user:"):
                kind = account.rsplit(":", 1)[1]
                deltas.setdefault(asset, {})[kind] = deltas.get(asset, {}).get(kind, 0) + amount
    return deltas


def _check_frozen(state: AccountState, deltas: dict[str, dict[str, int]]) -> None:
    """A repair that moves the processor's balances may not leave a frozen amount negative."""
    for asset, kinds in deltas.items():
        bal = state.balances.get(asset)  # read only: a check never creates a balance
        order_margin, position_margin = (0, 0) if bal is None else (bal.order_margin, bal.position_margin)
        if order_margin - kinds.get("ORDER_MARGIN", 0) < 0 or position_margin - kinds.get("POSITION_MARGIN", 0) < 0:
            raise Reject(Code.INSUFFICIENT_BALANCE, f"the repair would leave {asset} margin negative")

