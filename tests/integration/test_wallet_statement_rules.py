"""The rules against the wallet's own statement on the embedded ClickHouse (migrated schema), on small data:
a statement that agrees with the ledger is clean; a ledger leg with no line, a line with no ledger leg and
an amount that differs are each found by their rule with their journal, account and direction; a movement
younger than the grace is not judged; a repair's voided journal and a booked difference close the break."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from conftest_clickhouse import migrated_clickhouse

from perpline import wallet
from perpline.contracts import ids
from perpline.pipelines.ledger_sink_logic import POSTING_COLUMNS
from perpline.recon.repairs import COLUMNS as REPAIR_COLUMNS
from perpline.recon.rules import load_rules, run_rule

pytestmark = pytest.mark.integration
ACCT = 9
RULES = ("wallet_no_statement", "wallet_not_booked", "wallet_amount")
OLD_MS = int(time.time() * 1000) - 60_000  # older than the grace


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with migrated_clickhouse(tmp_path_factory.mktemp("ch")) as c:
        yield c


def book(client: Any, direction: str, rid: str, amount: str, ts_ms: int = OLD_MS) -> str:
    """The journal the processor writes for a deposit or a withdrawal; its id."""
    ref = ids.wallet_cause(ACCT, rid)
    jid = ids.journal_id(ref, direction)
    hot, spot = (Decimal(amount), -Decimal(amount)) if direction == "DEPOSIT" else (-Decimal(amount), Decimal(amount))
    client.insert("ledger_postings", [
        [jid, 0, direction, ref, ACCT, "", "platform:HOT_WALLET", "USDT", hot, "", "", ts_ms, 0, 0, 0],
        [jid, 1, direction, ref, ACCT, "", f"user:{ACCT}:SPOT", "USDT", spot, "", "", ts_ms, 0, 0, 0]],
        column_names=POSTING_COLUMNS)
    return jid


def line(client: Any, direction: str, rid: str, amount: str, ts_ms: int = OLD_MS) -> None:
    client.insert("wallet_statement", [wallet.row(wallet.movement(direction, ACCT, "USDT", amount, rid, ts_ms))],
                  column_names=wallet.COLUMNS)


def found(client: Any) -> dict[str, list[tuple[str, str, int]]]:
    now = int(time.time() * 1000)
    rules = [r for r in load_rules() if r.name in RULES]
    assert len(rules) == len(RULES)
    hits = {r.name: sorted((b.journal_id, b.ref_type, b.account_id) for b in run_rule(client, r, 0, now)) for r in rules}
    return {k: v for k, v in hits.items() if v}


def repair_record(client: Any, rule: str, action: str, journal_id: str, journal_ids: list[str], voided: list[str]
                  ) -> None:
    record = {c: "" for c in REPAIR_COLUMNS} | {
        "repair_id": f"r-{rule}-{journal_id}", "rule": rule, "action": action, "account_id": ACCT, "journal_id": journal_id,
        "status": "applied", "journal_ids": journal_ids, "voided": voided, "proposed_ms": 1, "applied_ms": 1,
        "confirmed_ms": 0, "updated_ms": 1}
    client.insert("recon_repairs", [[record[c] for c in REPAIR_COLUMNS]], column_names=REPAIR_COLUMNS)


def test_each_disagreement_with_the_statement_is_found_and_a_repair_closes_it(client: Any) -> None:
    assert found(client) == {}
    for direction, rid in (("DEPOSIT", "d1"), ("WITHDRAWAL", "w1")):
        book(client, direction, rid, "100")
        line(client, direction, rid, "100")
    assert found(client) == {}  # the wallet's statement and the ledger agree

    lost = book(client, "WITHDRAWAL", "w2", "7")  # booked, never sent
    line(client, "DEPOSIT", "d3", "25")  # received, never credited
    line(client, "DEPOSIT", "d1", "100.5")  # the wallet received more than was credited
    book(client, "DEPOSIT", "fresh", "1", ts_ms=int(time.time() * 1000))  # younger than the grace: not judged
    line(client, "WITHDRAWAL", "fresh-line", "1", ts_ms=int(time.time() * 1000))
    d1, d3 = (ids.journal_id(ids.wallet_cause(ACCT, r), "DEPOSIT") for r in ("d1", "d3"))
    assert found(client) == {"wallet_no_statement": [(lost, "WITHDRAWAL", ACCT)],
                             "wallet_not_booked": [(d3, "DEPOSIT", ACCT)],
                             "wallet_amount": [(d1, "DEPOSIT", ACCT)]}

    # the repairs' effects: the withdrawal sent, the deposit booked, the difference booked by a RECON_REPAIR
    line(client, "WITHDRAWAL", "w2", "7")
    book(client, "DEPOSIT", "d3", "25")
    client.insert("ledger_postings", [
        ["rep/RECON_REPAIR", 0, "RECON_REPAIR", "rep", ACCT, "", "platform:HOT_WALLET", "USDT", Decimal("0.5"), "", "",
         OLD_MS, 0, 0, 0],
        ["rep/RECON_REPAIR", 1, "RECON_REPAIR", "rep", ACCT, "", f"user:{ACCT}:SPOT", "USDT", Decimal("-0.5"), "", "",
         OLD_MS, 0, 0, 0]], column_names=POSTING_COLUMNS)
    repair_record(client, "wallet_amount", "compensate", d1, ["rep/RECON_REPAIR"], [])
    assert found(client) == {}

    reversed_ = book(client, "DEPOSIT", "never-received", "3")  # credited, the wallet never received it
    assert found(client) == {"wallet_no_statement": [(reversed_, "DEPOSIT", ACCT)]}
    repair_record(client, "wallet_no_statement", "reverse", reversed_, ["x/RECON_REPAIR"], [])
    assert found(client) == {}
    copy = book(client, "DEPOSIT", "copy", "4")  # a copy another rule's repair voids
    assert found(client) == {"wallet_no_statement": [(copy, "DEPOSIT", ACCT)]}
    repair_record(client, "duplicate_cause", "void", copy, ["y/RECON_REPAIR"], [copy])
    assert found(client) == {}
