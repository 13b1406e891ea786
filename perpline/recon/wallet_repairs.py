"""Repairs of breaks against the wallet's own statement (rules wallet_no_statement, wallet_not_booked,
wallet_amount; decisions in perpline.recon.plans.wallet_action; docs/reconciliation.md).

Everything goes through the normal path: a movement the ledger lacks is re-driven as the Deposit / Withdraw
command it was (the accounts processor's request memory makes a re-drive of one it applied a no-op), a
withdrawal the wallet never sent is sent by the wallet now (one line per reference: a re-send is a no-op),
a deposit the wallet never received is reversed and a wrong amount completed by RECON_REPAIR journals
posted through the processor (PostRepair, books=true: the processor's balances had moved too).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from perpline import wallet
from perpline.config import topic_map
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.contracts.units import format_amount, parse_amount
from perpline.recon import plans as p
from perpline.recon.rules import Break

if TYPE_CHECKING:
    from perpline.recon.repairs import Repair, Repairer


def plan(rep: Repairer, b: Break, repair: Repair) -> Repair:
    """The action for one break; the log is read only where the ledger holds the journal (a line with no
    journal is re-driven whatever the log says, and searching the log for what it may never have is costly)."""
    logged = None
    if b.rule != "wallet_not_booked" and rep.log is not None:
        logged = rep._find([b.journal_id]).get(b.journal_id, (None,))[0]
    action = p.wallet_action(b.rule, b.ref_type, rep._stored(b.journal_id), logged)
    if action == p.NONE:
        return replace(repair, instructions=f"{b.rule}: {b.journal_id} is not in the ledger.entries log: its copy is "
                                            "voided by the wallet_legs or duplicate_cause repair; this one is confirmed "
                                            "when the re-check no longer finds it")
    return replace(repair, action=action, status="proposed")


def apply(rep: Repairer, repair: Repair) -> tuple[list[str], list[str]]:
    """What the repair posted (journal ids) and voided."""
    if repair.action == p.RESINK:
        return rep._resink([repair.journal_id]), []
    if repair.action == p.REDRIVE and repair.rule == "wallet_not_booked":
        return _redrive_command(rep, repair), []
    logged = rep._find([repair.journal_id]).get(repair.journal_id, (None,))[0]
    if logged is None:
        raise ValueError(f"{repair.journal_id} is not in the ledger.entries log: nothing to re-drive or reverse")
    if repair.action == p.REDRIVE:
        _send(rep, logged)
        return [], []
    if repair.action == p.REVERSE:
        journals = p.reversal(p.log_rows(logged), label="reverse")
        # reversed, not voided: the deposit is a real journal of the account (its number stays in the sequence);
        # wallet_no_statement skips a journal its applied `reverse` names
        return rep._post(repair, logged.account_id, "", journals, books=True, part="0"), []
    if repair.action == p.COMPENSATE:
        line = _line(rep.client, repair.journal_id)
        journals = p.wallet_difference(line["direction"], logged.account_id, line["asset"],
                                       parse_amount(line["amount"]), p.hot_wallet_units(logged))
        return rep._post(repair, logged.account_id, "", journals, books=True, part="0"), []
    raise ValueError(f"repair {repair.repair_id} ({repair.action}) has nothing to apply")


def _redrive_command(rep: Repairer, repair: Repair) -> list[str]:
    """The wallet's line as the command the exchange should have booked it from, under the same request id."""
    line = _line(rep.client, repair.journal_id)
    make: Any = m.Deposit if line["direction"] == wallet.DEPOSIT else m.Withdraw
    cmd = make(trace_id=repair.repair_id, causation_id=repair.repair_id, ts_ms=int(time.time() * 1000),
               request_id=line["request_id"], account_id=line["account_id"], asset=line["asset"], amount=line["amount"])
    assert rep.producer is not None
    rep.producer.produce(topic_map()["account.commands"], key=str(line["account_id"]).encode(), value=codec.encode(cmd))
    rep.producer.flush(10)
    rep._resink([repair.journal_id], {line["account_id"]})  # a journal the processor wrote and the copy lost
    return [repair.journal_id]


def _send(rep: Repairer, journal: m.Journal) -> None:
    """The wallet sends a withdrawal the exchange booked: once per reference (a line it holds is not sent again)."""
    if wallet.executed(rep.client, journal.journal_id):
        return
    asset = journal.postings[0].asset
    request_id = journal.ref_id.split(":", 2)[2]  # ids.wallet_cause: wallet:<account>:<request id>
    line = wallet.movement(wallet.WITHDRAWAL, journal.account_id, asset, format_amount(p.hot_wallet_units(journal)),
                           request_id, int(time.time() * 1000))
    assert rep.producer is not None
    rep.producer.produce(topic_map()[wallet.TOPIC], key=str(journal.account_id).encode(), value=codec.encode(line))
    rep.producer.flush(10)
    rep.client.insert("wallet_statement", [wallet.row(line)], column_names=wallet.COLUMNS)


def _line(client: Any, journal_id: str) -> dict[str, Any]:
    rows = client.query("SELECT direction, account_id, asset, toString(amount), request_id FROM wallet_statement FINAL "
                        "WHERE journal_id = {j:String} LIMIT 1", parameters={"j": journal_id}).result_rows
    if not rows:
        raise ValueError(f"no line of the wallet statement answers to {journal_id}")
    direction, account_id, asset, amount, request_id = rows[0]
    return {"direction": str(direction), "account_id": int(account_id), "asset": str(asset),
            "amount": format_amount(parse_amount(str(amount))), "request_id": str(request_id)}
