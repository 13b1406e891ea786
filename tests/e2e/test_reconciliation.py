"""Reconciliation on the real stack: a clean run reports nothing; then faults are injected straight into
ClickHouse and each must be reported by the right rule, with the right dimensions, within 30 s, by the
running reconciler (every 2 s here):

- a posting altered in place            -> journal_balanced (its journal), trial_balance (USDT)
- a settlement leg dropped               -> trade_settlement (the symbol and the trade's seq)
- a journal duplicated under a new id    -> duplicate_cause (the account, DEPOSIT)
- a matcher seq gap                      -> matcher_sequence (the symbol)
- a withdrawal without its wallet leg    -> wallet_legs (that journal)
- a settlement leg booked twice          -> duplicate_cause (the copy)
- a fee at a wrong rate                  -> trade_fees (that leg's fee journal)

Then each is repaired (docs/reconciliation.md): automatically (restore from ledger.entries, re-drive, void a
copy), by the operator command (the wallet leg, the fee), or not at all (the seq gap halts the symbol:
a new order is refused with SYMBOL_HALTED); the next full pass is clean but for the halt, and the books
hold every invariant.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from stackutil import Stack, running_stack

from perpline import wallet
from perpline.audit import Audit
from perpline.ch.client import get_client
from perpline.config import producer_config, topic_map
from perpline.contracts import codec
from perpline.pipelines.ledger_sink_logic import POSTING_COLUMNS
from perpline.recon import operator
from perpline.recon.repairs import LedgerLog, Repairer
from perpline.recon.rules import load_rules, run_rule

pytestmark = pytest.mark.e2e
SYM = "BTCUSDT-PERP"
ANN, BEN = 7_400_001, 7_400_002
DEADLINE_S = 30
INJECTED: dict[str, Any] = {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory, {"PERPLINE_RECON_INTERVAL_S": "2"})


def call(stack: Stack, method: str, path: str, acct: int, key: str | None = None, **kw: Any) -> Any:
    headers = {"X-Account-Id": str(acct), **({"Idempotency-Key": key} if key else {})}
    response = httpx.request(method, stack.api + path, headers=headers, timeout=30, **kw)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def until(check: Any, timeout_s: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    got = None
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"not reported within {timeout_s} s (last: {got})")


def breaks_since(client: Any, since_ms: int) -> list[dict[str, Any]]:
    rows = client.query("SELECT rule, asset, account_id, symbol, journal_id, ref_type, detail FROM recon_breaks "
                        "WHERE found_ms >= {t:Int64}", parameters={"t": since_ms})
    return [dict(zip(rows.column_names, r, strict=True)) for r in rows.result_rows]


def test_a_clean_run_is_clean_and_every_injected_fault_is_found(stack: Stack) -> None:
    assert len(load_rules()) >= 12
    for acct in (ANN, BEN):
        call(stack, "POST", "/api/v1/wallet/deposits", acct, f"dep-{acct}", json={"asset": "USDT", "amount": "10000"})
    call(stack, "POST", "/api/v1/orders", BEN, json={"symbol": SYM, "side": "SELL", "type": "LIMIT", "price": "50000",
                                                    "quantity": "0.010"})
    call(stack, "POST", "/api/v1/orders", ANN, json={"symbol": SYM, "side": "BUY", "type": "LIMIT", "price": "50000",
                                                    "quantity": "0.010"})
    call(stack, "POST", "/api/v1/wallet/withdrawals", ANN, "wd-1", json={"asset": "USDT", "amount": "100"})
    client = get_client(stack.clickhouse(admin=True))
    until(lambda: client.query("SELECT count() FROM ledger_postings FINAL WHERE ref_type = 'TRADE_SETTLED'")
          .result_rows[0][0] >= 4)
    time.sleep(8)  # settlement grace (5 s) and two runs for the eventual rules
    clean_from = int(time.time() * 1000)
    until(lambda: client.query("SELECT count() FROM recon_runs WHERE started_ms >= {t:Int64}",
                               parameters={"t": clean_from}).result_rows[0][0] >= 2)
    assert breaks_since(client, clean_from - 4000) == []  # the clean runs found nothing

    injected_ms = int(time.time() * 1000)
    cols = ", ".join(c for c in POSTING_COLUMNS)
    # 1. a posting altered in place (same key, another amount: ReplacingMergeTree keeps the newest)
    altered = client.query("SELECT journal_id FROM ledger_postings FINAL WHERE ref_type = 'ORDER_MARGIN_FROZEN' "
                           "AND account_id = {a:UInt64} LIMIT 1", parameters={"a": BEN}).result_rows[0][0]
    client.command(f"INSERT INTO ledger_postings ({cols}) SELECT {cols.replace('amount', 'amount + 1')} "
                   f"FROM ledger_postings FINAL WHERE journal_id = '{altered}' AND posting_index = 0")
    # 2. a settlement leg dropped
    leg = client.query("SELECT journal_id, ref_id FROM ledger_postings FINAL WHERE ref_type = 'TRADE_SETTLED' "
                       "AND ref_id LIKE '%:MAKER' LIMIT 1").result_rows[0]
    client.command(f"ALTER TABLE ledger_postings DELETE WHERE journal_id = '{leg[0]}' SETTINGS mutations_sync = 1")
    seq = leg[1].split(":")[2]
    # 3. a journal duplicated under a new id
    dep = f"wallet:{ANN}:dep-{ANN}/DEPOSIT"
    copied = cols.replace("journal_id", "concat(journal_id, '-copy')", 1)
    client.command(f"INSERT INTO ledger_postings ({cols}) SELECT {copied} FROM ledger_postings FINAL "
                   f"WHERE journal_id = '{dep}'")
    # 4. a matcher seq gap (an event that is not a trade, so only the sequence rule sees it)
    gap = client.query("SELECT seq FROM matcher_events FINAL WHERE symbol = {s:String} AND type = 'accepted' "
                       "ORDER BY seq LIMIT 1", parameters={"s": SYM}).result_rows[0][0]
    client.command(f"ALTER TABLE matcher_events DELETE WHERE symbol = '{SYM}' AND seq = {gap} SETTINGS mutations_sync = 1")
    # 6. a settlement leg booked twice (a copy of a taker leg under a new id)
    twice = client.query("SELECT journal_id FROM ledger_postings FINAL WHERE ref_type = 'TRADE_SETTLED' "
                         "AND ref_id LIKE '%:TAKER' LIMIT 1").result_rows[0][0]
    again = cols.replace("journal_id", "concat(journal_id, '-again')", 1)
    client.command(f"INSERT INTO ledger_postings ({cols}) SELECT {again} FROM ledger_postings FINAL "
                   f"WHERE journal_id = '{twice}'")
    # 7. a fee at a wrong rate (both postings: balanced, three times the fee)
    fee = client.query("SELECT journal_id FROM ledger_postings FINAL WHERE ref_type = 'TRADE_FEE' "
                       "AND ref_id LIKE '%:MAKER' LIMIT 1").result_rows[0][0]
    client.command(f"INSERT INTO ledger_postings ({cols}) SELECT {cols.replace('amount', 'amount * 3')} "
                   f"FROM ledger_postings FINAL WHERE journal_id = '{fee}'")
    # 5. a withdrawal without its wallet leg (balanced, but the money went to fee revenue, not out)
    client.insert("ledger_postings", [
        ["fake-wd/WITHDRAWAL", 0, "WITHDRAWAL", "fake-wd", ANN, "", f"user:{ANN}:SPOT", "USDT", 5, "", "", injected_ms,
         0, 0, 0],
        ["fake-wd/WITHDRAWAL", 1, "WITHDRAWAL", "fake-wd", ANN, "", "platform:FEE_REVENUE", "USDT", -5, "", "",
         injected_ms, 0, 0, 0]], column_names=POSTING_COLUMNS)

    expected = {
        "journal_balanced": lambda b: b["journal_id"] == altered and b["asset"] == "USDT" and b["account_id"] == BEN,
        "trial_balance": lambda b: b["asset"] == "USDT",
        "trade_settlement": lambda b: b["symbol"] == SYM and f"seq {seq} " in b["detail"],
        "duplicate_cause": lambda b: b["account_id"] == ANN and b["ref_type"] == "DEPOSIT" and dep in b["journal_id"],
        "matcher_sequence": lambda b: b["symbol"] == SYM,
        "wallet_legs": lambda b: b["journal_id"] == "fake-wd/WITHDRAWAL" and b["account_id"] == ANN,
        "trade_fees": lambda b: b["journal_id"] == fee,
    }
    INJECTED.update(altered=altered, seq=seq, dep=dep, twice=twice, fee=fee, injected_ms=injected_ms)

    def all_found() -> dict[str, list[dict[str, Any]]] | None:
        found = breaks_since(client, injected_ms)
        by_rule = {rule: [b for b in found if b["rule"] == rule and match(b)] for rule, match in expected.items()}
        return by_rule if all(by_rule.values()) else None

    by_rule = until(all_found)
    assert set(by_rule) == set(expected)
    reported = client.query("SELECT count() FROM recon_runs WHERE started_ms >= {t:Int64} AND breaks > 0",
                            parameters={"t": injected_ms}).result_rows[0][0]
    assert reported >= 1
    metrics = httpx.get(f"{stack.api}/metrics", timeout=10).text  # the API's; the reconciler serves its own
    assert "perpline" in metrics


def repairs(client: Any) -> list[dict[str, Any]]:
    rows = client.query("SELECT repair_id, rule, action, policy, status, actor, journal_id, journal_ids, voided, "
                        "instructions, recheck FROM recon_repairs FINAL ORDER BY proposed_ms")
    return [dict(zip(rows.column_names, r, strict=True)) for r in rows.result_rows]


def test_every_break_is_repaired_by_its_policy_and_the_books_hold(stack: Stack) -> None:
    assert INJECTED, "runs after the faults were injected"
    client = get_client(stack.clickhouse(admin=True))
    bootstrap = stack.value("kafka")

    def one(rule: str, status: str, match: Any = lambda r: True) -> dict[str, Any] | None:
        return next((r for r in repairs(client) if r["rule"] == rule and r["status"] == status and match(r)), None)

    # automatic: the altered posting restored from the log, the lost leg re-driven, the copies voided
    assert until(lambda: one("journal_balanced", "confirmed", lambda r: r["journal_id"] == INJECTED["altered"]), 60)
    assert until(lambda: one("trade_settlement", "confirmed"), 60)["action"] == "redrive"
    dup = until(lambda: one("duplicate_cause", "confirmed", lambda r: INJECTED["dep"] in r["journal_id"]), 60)
    assert dup["action"] == "void" and dup["actor"] == "policy:auto" and dup["voided"] == [INJECTED["dep"] + "-copy"]
    assert until(lambda: one("duplicate_cause", "confirmed", lambda r: INJECTED["twice"] + "-again" in r["voided"]), 60)
    # proposed: an operator applies them (the function behind `perpline recon repair ID --apply`)
    rep = Repairer(client, Producer(producer_config(bootstrap)), LedgerLog(bootstrap), load_rules())
    wallet = until(lambda: one("wallet_legs", "proposed"))
    fee = until(lambda: one("trade_fees", "proposed", lambda r: r["journal_id"] == INJECTED["fee"]))
    assert (wallet["action"], fee["action"]) == ("void", "resink")
    for proposed in (wallet, fee):
        assert operator.apply(rep, proposed["repair_id"], "ops-test").status == "applied"
    done = until(lambda: one("wallet_legs", "confirmed"), 60)
    assert done["actor"] == "operator:ops-test" and done["voided"] == ["fake-wd/WITHDRAWAL"]
    assert until(lambda: one("trade_fees", "confirmed", lambda r: r["journal_id"] == INJECTED["fee"]), 60)
    # the audit trail: the account's statement shows the repair's journal and its record
    statement = Audit(client).statement(ANN, 0, 2**62)
    line = next(x for x in statement["lines"] if x["journal_id"] in done["journal_ids"])
    assert line["ref_type"] == "RECON_REPAIR" and line["change"] == 5 and statement["agrees_with_ledger"]
    record = line["repair"]
    assert (record["repair_id"], record["rule"], record["actor"]) == (done["repair_id"], "wallet_legs", "operator:ops-test")
    assert record["voided"] == ["fake-wd/WITHDRAWAL"] and record["confirmed_ms"] >= record["applied_ms"] > 0
    assert "the break is gone" in record["recheck"]
    # never: the seq gap halts the symbol; a trader sees why; cancels still go through
    halt = until(lambda: one("matcher_sequence", "halted"))
    assert "resume" in halt["instructions"] and SYM in halt["instructions"]
    refused = httpx.post(stack.api + "/api/v1/orders", headers={"X-Account-Id": str(BEN)}, timeout=30, json={
        "symbol": SYM, "side": "SELL", "type": "LIMIT", "price": "60000", "quantity": "0.010"})
    assert refused.status_code == 400 and refused.json()["code"] == 2013, refused.text
    # the audit trail: the repair journals are in the ledger under their own reference type
    repair_journals = client.query("SELECT DISTINCT journal_id FROM ledger_postings FINAL "
                                   "WHERE ref_type = 'RECON_REPAIR'").result_rows
    assert {j for (j,) in repair_journals} >= set(dup["journal_ids"]) | set(done["journal_ids"])
    # the next full pass finds nothing but the halted gap, and the books hold every invariant
    now_ms = int(time.time() * 1000) + 10_000
    left = {r.name: run_rule(client, r, 0, now_ms) for r in load_rules()}
    assert {name for name, found in left.items() if found} == {"matcher_sequence"}, left
    assert client.query("SELECT countIf(s != 0) FROM (SELECT sum(amount) AS s FROM ledger_postings FINAL "
                        "GROUP BY journal_id, asset)").result_rows[0][0] == 0  # every journal sums to zero
    assert client.query("SELECT sum(amount) FROM ledger_postings FINAL").result_rows[0][0] == 0  # trial balance
    # (wallets == ledger, long == short and fees == fee revenue are the rules ledger_vs_state, open_interest and
    # trade_fees, clean above)


CAL = 7_400_003


def test_the_wallet_statement_is_the_third_party_and_each_break_against_it_is_repaired(stack: Stack) -> None:
    """The simulated wallet's own statement (perpline.wallet: written by the API as it moves money, imported
    by the reconciler) against the ledger. Three faults: a withdrawal's line deleted (the wallet never sent
    it), a deposit line added that the ledger does not show, a deposit line's amount altered; plus a deposit
    line deleted (the wallet never received it). Each is found by its rule and repaired per its policy
    (the first two re-driven automatically, the other two by the operator: the difference booked, the
    deposit reversed), the next pass is clean and the books hold."""
    assert INJECTED, "runs after the repair test (same stack)"
    client = get_client(stack.clickhouse(admin=True))
    bootstrap = stack.value("kafka")
    call(stack, "POST", "/api/v1/wallet/deposits", CAL, "dep-cal", json={"asset": "USDT", "amount": "50"})
    lines = {jid: (tx, amount) for jid, tx, amount in client.query(
        "SELECT journal_id, wallet_tx_id, amount FROM wallet_statement FINAL").result_rows}
    wd, dep_ben, dep_cal = (f"wallet:{a}:{r}/{t}" for a, r, t in ((ANN, "wd-1", "WITHDRAWAL"), (BEN, f"dep-{BEN}",
                                                                  "DEPOSIT"), (CAL, "dep-cal", "DEPOSIT")))
    until(lambda: client.query("SELECT count() FROM wallet_statement WHERE journal_id = {j:String}",
                               parameters={"j": dep_cal}).result_rows[0][0])
    assert lines[wd][1] == 100 and lines[f"wallet:{ANN}:dep-{ANN}/DEPOSIT"][1] == 10000  # the API's movements
    now_ms = int(time.time() * 1000) + 10_000
    wallet_rules = [r for r in load_rules() if r.name.startswith("wallet_") and r.name != "wallet_legs"]
    assert len(wallet_rules) == 3 and not [b for r in wallet_rules for b in run_rule(client, r, 0, now_ms)]

    # 1. the withdrawal's line deleted: the exchange debited ANN, the wallet never sent it
    client.command(f"ALTER TABLE wallet_statement DELETE WHERE journal_id = '{wd}' SETTINGS mutations_sync = 1")
    # 2. a deposit line the ledger does not show (the wallet received 42 for BEN; no one told the exchange)
    extra = wallet.movement(wallet.DEPOSIT, BEN, "USDT", "42", "chain-42", int(time.time() * 1000))
    producer = Producer(producer_config(bootstrap))
    producer.produce(topic_map()[wallet.TOPIC], key=str(BEN).encode(), value=codec.encode(extra))
    producer.flush(10)
    # 3. a deposit line's amount altered (the wallet received 10001, the ledger credited 10000)
    client.command(f"INSERT INTO wallet_statement ({', '.join(wallet.COLUMNS)}) SELECT "
                   f"{', '.join(wallet.COLUMNS).replace('amount', 'amount + 1')} FROM wallet_statement FINAL "
                   f"WHERE journal_id = '{dep_ben}'")
    # 4. a deposit line deleted: the exchange credited CAL 50 the wallet never received
    client.command(f"ALTER TABLE wallet_statement DELETE WHERE journal_id = '{dep_cal}' SETTINGS mutations_sync = 1")
    ben_before = Audit(client).account(BEN, 2**62)  # before the re-drive: it waits for four passes

    def one(rule: str, status: str, journal_id: str) -> dict[str, Any] | None:
        return next((r for r in repairs(client) if r["rule"] == rule and r["status"] == status
                     and r["journal_id"] == journal_id), None)

    # automatic: the withdrawal sent by the wallet now (its line back, the same movement id), the deposit re-driven
    sent = until(lambda: one("wallet_no_statement", "confirmed", wd), 60)
    assert (sent["action"], sent["actor"]) == ("redrive", "policy:auto")
    assert client.query("SELECT wallet_tx_id, amount FROM wallet_statement FINAL WHERE journal_id = {j:String}",
                        parameters={"j": wd}).result_rows == [(lines[wd][0], 100)]
    booked = until(lambda: one("wallet_not_booked", "confirmed", f"wallet:{BEN}:chain-42/DEPOSIT"), 60)
    assert (booked["action"], booked["actor"], booked["journal_ids"]) == ("redrive", "policy:auto",
                                                                          [f"wallet:{BEN}:chain-42/DEPOSIT"])
    # proposed: the operator books the difference and reverses the deposit never received
    rep = Repairer(client, producer, LedgerLog(bootstrap), load_rules())
    diff = until(lambda: one("wallet_amount", "proposed", dep_ben))
    rev = until(lambda: one("wallet_no_statement", "proposed", dep_cal))
    assert (diff["action"], rev["action"]) == ("compensate", "reverse")
    for proposed in (diff, rev):
        assert operator.apply(rep, proposed["repair_id"], "ops-test").status == "applied"
    diff = until(lambda: one("wallet_amount", "confirmed", dep_ben), 60)
    rev = until(lambda: one("wallet_no_statement", "confirmed", dep_cal), 60)
    assert rev["voided"] == [] and len(rev["journal_ids"]) == len(diff["journal_ids"]) == 1  # reversed, not voided
    assert rev["actor"] == diff["actor"] == "operator:ops-test"
    # BEN was credited the 42 re-driven and the 1 the wallet received more; CAL's 50 taken back
    ben = Audit(client).account(BEN, 2**62)
    assert ben["USDT"]["deposits"] == ben_before["USDT"]["deposits"] + 42
    statement = Audit(client).statement(BEN, 0, 2**62)
    assert statement["agrees_with_ledger"]
    assert [x["change"] for x in statement["lines"] if x["journal_id"] in diff["journal_ids"]] == [1]
    assert client.query("SELECT -sum(amount) FROM ledger_postings FINAL WHERE ledger_account = {a:String}",
                        parameters={"a": f"user:{CAL}:SPOT"}).result_rows[0][0] == 0

    # the next full pass finds nothing but the halted gap, and the books hold
    now_ms = int(time.time() * 1000) + 10_000
    left = {r.name: run_rule(client, r, 0, now_ms) for r in load_rules()}
    assert {name for name, found in left.items() if found} == {"matcher_sequence"}, left
    assert client.query("SELECT countIf(s != 0) FROM (SELECT sum(amount) AS s FROM ledger_postings FINAL "
                        "GROUP BY journal_id, asset)").result_rows[0][0] == 0
    assert client.query("SELECT sum(amount) FROM ledger_postings FINAL").result_rows[0][0] == 0
    wallet_total = client.query("SELECT sumIf(amount, direction = 'DEPOSIT') - sumIf(amount, direction = 'WITHDRAWAL') "
                                "FROM wallet_statement FINAL").result_rows[0][0]
    hot = client.query("SELECT sum(amount) FROM ledger_postings FINAL WHERE ledger_account = 'platform:HOT_WALLET'"
                       ).result_rows[0][0]
    assert hot == wallet_total  # the hot wallet in the ledger is what the wallet holds
