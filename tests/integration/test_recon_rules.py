"""Every reconciliation rule runs on the embedded ClickHouse (migrated schema): on an empty ledger and
on a clean one it finds nothing; an unbalanced journal, a wallet journal without its wallet leg and a
matcher seq gap are each found by their rule with their dimensions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from conftest_clickhouse import migrated_clickhouse

from perpline.pipelines.ledger_sink_logic import MATCHER_EVENT_COLUMNS, POSTING_COLUMNS
from perpline.recon.rules import load_rules, run_rule
from perpline.recon.runner import Reconciler

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with migrated_clickhouse(tmp_path_factory.mktemp("ch")) as c:
        yield c


def posting(journal: str, i: int, ref_type: str, account: int, ledger_account: str, amount: str, seq: int = 0) -> list:
    ref_id = journal.rsplit("/", 1)[0]
    return [journal, i, ref_type, ref_id, account, "", ledger_account, "USDT", Decimal(amount), "t", "c",
            int(time.time() * 1000), 0, 0, seq]


def found(client: Any) -> dict[str, list[Any]]:
    now = int(time.time() * 1000)
    return {rule.name: hits for rule in load_rules() if (hits := run_rule(client, rule, 0, now))}


def test_rules_on_empty_clean_and_broken_ledgers(client: Any) -> None:
    assert len(load_rules()) >= 12
    assert found(client) == {}
    client.insert("ledger_postings", [posting("d1/DEPOSIT", 0, "DEPOSIT", 5, "platform:HOT_WALLET", "100", 1),
                                      posting("d1/DEPOSIT", 1, "DEPOSIT", 5, "user:5:SPOT", "-100", 1)],
                  column_names=POSTING_COLUMNS)
    assert found(client) == {}
    client.insert("ledger_postings", [posting("w1/WITHDRAWAL", 0, "WITHDRAWAL", 5, "user:5:SPOT", "10", 2),
                                      posting("w1/WITHDRAWAL", 1, "WITHDRAWAL", 5, "platform:FEE_REVENUE", "-10", 2),
                                      posting("x1/TRADE_FEE", 0, "TRADE_FEE", 5, "user:5:SPOT", "1", 3)],
                  column_names=POSTING_COLUMNS)
    client.insert("matcher_events", [["BTCUSDT-PERP", 1, "accepted", "", "", 1, "{}"],
                                     ["BTCUSDT-PERP", 3, "accepted", "", "", 2, "{}"]], column_names=MATCHER_EVENT_COLUMNS)
    hits = found(client)
    assert [b.journal_id for b in hits["journal_balanced"]] == ["x1/TRADE_FEE"]
    assert hits["journal_balanced"][0].account_id == 5
    assert [b.journal_id for b in hits["wallet_legs"]] == ["w1/WITHDRAWAL"]
    assert [b.asset for b in hits["trial_balance"]] == ["USDT"]
    assert [b.symbol for b in hits["matcher_sequence"]] == ["BTCUSDT-PERP"]
    recon = Reconciler(client, None)
    recon.publish_instruments()
    old_ms = int(time.time() * 1000) - 60_000  # older than the settlement grace
    client.insert("matcher_events", [["ETHUSDT-PERP", 1, "trade", "", "", old_ms,
                                      '{"price":"3000.00","quantity":"0.100"}', old_ms]],
                  column_names=[*MATCHER_EVENT_COLUMNS, "inserted_ms"])
    fee_rows = []
    for leg, fee in (("MAKER", "0.06"), ("TAKER", "0.14")):  # 300 x 0.02 % is right, 300 x 0.05 % = 0.15 is not
        jid = f"fill:ETHUSDT-PERP:1:{leg}/TRADE_FEE"
        fee_rows += [posting(jid, 0, "TRADE_FEE", 6, "user:6:SPOT", fee), posting(jid, 1, "TRADE_FEE", 6,
                                                                               "platform:FEE_REVENUE", f"-{fee}")]
    client.insert("ledger_postings", fee_rows, column_names=POSTING_COLUMNS)
    hits = found(client)
    assert [b.journal_id for b in hits["trade_fees"]] == ["fill:ETHUSDT-PERP:1:TAKER/TRADE_FEE"]
    assert "expected 0.15" in hits["trade_fees"][0].detail
    breaks = recon.run(full=True)
    assert {b.rule for b in breaks} >= {"journal_balanced", "wallet_legs", "trial_balance", "matcher_sequence"}
    assert client.query("SELECT count() FROM recon_breaks").result_rows[0][0] == len(breaks)
    assert client.query("SELECT breaks FROM recon_runs").result_rows[0][0] == len(breaks)


def test_a_funding_round_is_judged_once_its_legs_are_settled(client: Any) -> None:
    cols = [*POSTING_COLUMNS, "inserted_ms"]
    now = int(time.time() * 1000)

    def leg(round_ms: int, account: int, clearing: str, inserted_ms: int) -> list[list[Any]]:
        journal = f"funding:BTCUSDT-PERP:{round_ms}:{account}/FUNDING"
        user = str(-Decimal(clearing))
        return [posting(journal, 0, "FUNDING", account, f"user:{account}:SPOT", user, 50) + [inserted_ms],
                posting(journal, 1, "FUNDING", account, "platform:FUNDING_CLEARING", clearing, 50) + [inserted_ms]]

    def funding_breaks() -> list[Any]:
        return found(client).get("funding_round", [])

    client.insert("ledger_postings", leg(1000, 7, "-5", now), column_names=cols)  # the payer's leg, just stored
    assert funding_breaks() == []  # the receiver's may be a moment behind: not judged yet
    client.insert("ledger_postings", leg(2000, 7, "-5", now - 60_000), column_names=cols)  # a minute old, alone
    (only,) = funding_breaks()
    assert "funding:BTCUSDT-PERP:2000" in str(only)
    client.insert("ledger_postings", leg(2000, 8, "5", now - 60_000), column_names=cols)  # the receiver's leg
    assert funding_breaks() == []


class ScriptedProgress:
    """The pipeline's progress as the test sets it: every stage behind (lagging) or caught up."""

    def __init__(self) -> None:
        self.lagging = True
        self.marks = 0

    def mark(self) -> int:
        self.marks += 1
        return self.marks

    def drained(self, _mark: int) -> bool:
        return not self.lagging


def trade_row(seq: int, inserted_ms: int) -> list[Any]:
    return ["BTCUSDT-PERP", seq, "trade", "", "", inserted_ms, '{"price":"50000.00","quantity":"0.010"}', inserted_ms]


def settled_legs(seq: int) -> list[list[Any]]:
    """What the sink writes once clearing, accounts and the sink caught up: both legs settled, fees right."""
    from perpline.contracts.instruments import load_catalog  # noqa: PLC0415
    from perpline.contracts.units import format_rate  # noqa: PLC0415

    inst = load_catalog().get("BTCUSDT-PERP")
    assert inst is not None
    rows = []
    for leg, rate_e8, account in (("MAKER", inst.maker_fee_e8, 31), ("TAKER", inst.taker_fee_e8, 32)):
        ref = f"fill:BTCUSDT-PERP:{seq}:{leg}"
        fee = str(Decimal("500") * Decimal(format_rate(rate_e8)))
        for i, (ledger_account, amount) in enumerate(((f"user:{account}:SPOT", fee), ("platform:FEE_REVENUE", f"-{fee}"))):
            rows.append([f"{ref}/TRADE_FEE", i, "TRADE_FEE", ref, account, "BTCUSDT-PERP", ledger_account, "USDT",
                         Decimal(amount), "t", "c", 1, 0, 0, 0])
        for i, ledger_account in enumerate((f"user:{account}:SPOT", f"user:{account}:POSITION_MARGIN")):
            rows.append([f"{ref}/TRADE_SETTLED", i, "TRADE_SETTLED", ref, account, "BTCUSDT-PERP", ledger_account,
                         "USDT", Decimal("1" if i == 0 else "-1"), "t", "c", 1, 0, 0, 0])
    return rows


def test_lag_is_not_a_break_and_a_persistent_break_is_reported(client: Any) -> None:
    """A trade in matcher_events whose legs are not in the ledger yet (sink or ClickHouse down, or a stage
    behind) is no break while the pipeline has not caught up; once it has, a trade still without legs is."""
    from perpline.recon.confirm import CHAIN_DEPTH  # noqa: PLC0415

    rules = [r for r in load_rules() if r.name in ("trade_settlement", "trade_fees")]
    progress = ScriptedProgress()
    recon = Reconciler(client, None, rules, progress)
    recon.publish_instruments()

    def mine(seq: int) -> list[Any]:
        return [b for b in recon.run() if f":{seq}:" in b.journal_id or f"seq {seq} " in b.detail]

    old_ms = int(time.time() * 1000) - 60_000  # well past the settlement grace
    client.insert("matcher_events", [trade_row(900_001, old_ms)], column_names=[*MATCHER_EVENT_COLUMNS, "inserted_ms"])
    for _ in range(CHAIN_DEPTH + 3):  # the sink is behind: the legs are not there, passes keep finding them missing
        assert mine(900_001) == []
    client.insert("ledger_postings", settled_legs(900_001), column_names=POSTING_COLUMNS)  # caught up
    progress.lagging = False
    for _ in range(CHAIN_DEPTH + 3):
        assert mine(900_001) == []
    client.insert("matcher_events", [trade_row(900_002, old_ms)], column_names=[*MATCHER_EVENT_COLUMNS, "inserted_ms"])
    runs = [mine(900_002) for _ in range(CHAIN_DEPTH + 1)]  # never settled, the pipeline caught up: a break
    assert all(r == [] for r in runs[:-1])
    assert {(b.rule, b.severity) for b in runs[-1]} == {("trade_settlement", "critical"), ("trade_fees", "critical")}
    assert any("fee charged 0" in b.detail for b in runs[-1])


def test_a_pass_over_unchanged_tables_is_skipped_and_any_change_runs_the_rules(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    def modes(c: Any) -> list[str]:
        return [r[0] for r in c.query("SELECT mode FROM recon_runs ORDER BY started_ms, mode").result_rows]

    with migrated_clickhouse(tmp_path_factory.mktemp("ch-unchanged")) as c:
        recon = Reconciler(c, None)
        recon.publish_instruments()
        c.insert("ledger_postings", [posting("t9/TRADE_SETTLED", 0, "TRADE_SETTLED", 9, "user:9:SPOT", "5", 1),
                                     posting("t9/TRADE_SETTLED", 1, "TRADE_SETTLED", 9, "user:9:POSITION_MARGIN",
                                             "-5", 1)],
                 column_names=POSTING_COLUMNS)
        assert recon.run_if_changed() == [] and recon.run_if_changed() == []
        assert modes(c) == ["incremental", "incremental"]  # rows younger than the grace: judged again
        recon.quiet_ms = 0  # as if the grace had passed for every row
        time.sleep(1.1)  # the parts' times have a one-second resolution
        recon.run_if_changed()  # runs, or is skipped already when the last pass began a second after the insert
        assert recon.run_if_changed() == [] and modes(c)[-1] == "unchanged"
        c.insert("recon_repairs", [["rep-1", "journal_balanced", "applied", 1]],
                 column_names=["repair_id", "rule", "status", "updated_ms"])  # a repair being re-checked: every pass runs
        time.sleep(1.1)
        recon.run_if_changed()
        assert recon.run_if_changed() == [] and modes(c)[-1] == "incremental"
        c.insert("recon_repairs", [["rep-1", "journal_balanced", "confirmed", 2]],
                 column_names=["repair_id", "rule", "status", "updated_ms"])
        time.sleep(1.1)
        recon.run_if_changed()
        assert recon.run_if_changed() == [] and modes(c)[-1] == "unchanged"
        before = c.query("SELECT count() FROM recon_runs WHERE mode = 'unchanged'").result_rows[0][0]
        c.insert("ledger_postings", [posting("x9/TRADE_FEE", 0, "TRADE_FEE", 9, "user:9:SPOT", "1", 2)],
                 column_names=POSTING_COLUMNS)
        time.sleep(1.1)
        found = recon.run_if_changed()  # a new row: the rules run and find it
        assert [b.journal_id for b in found if b.rule == "journal_balanced"] == ["x9/TRADE_FEE"]
        recon.run_if_changed()  # a pass that found something is never skipped: it must be confirmed or repaired
        after = c.query("SELECT count() FROM recon_runs WHERE mode = 'unchanged'").result_rows[0][0]
        assert after == before and modes(c)[-1] == "incremental"
