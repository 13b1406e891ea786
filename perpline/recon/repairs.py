"""Repairs of reconciliation breaks: planned, applied (by policy or by an operator), re-checked.

A repair is a record in ClickHouse `recon_repairs` (which break, which rule, the action, the policy, who
applied it, when, what it posted, what it voided, the re-check that confirmed the break gone), published
on `recon.breaks` (key: rule) at every change of status. What a repair posts goes through the normal
path: RECON_REPAIR journals are PostRepair commands on account.commands (the accounts processor applies
them idempotently by request id), a lost settlement leg is re-driven from the matcher's event onto
account.commands, a damaged copy is restored from the ledger.entries log. Nothing edits history.
The decisions are in perpline.recon.plans.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from perpline.config import kafka_config, topic_map
from perpline.contracts import codec, ids
from perpline.contracts import messages as m
from perpline.matcher.legs import legs
from perpline.pipelines.ledger_sink_logic import POSTING_COLUMNS, posting_rows
from perpline.recon import plans as p
from perpline.recon import repair_columns, wallet_repairs
from perpline.recon.rules import Break, Rule, run_rule

log = logging.getLogger("perpline.recon.repairs")
COLUMNS = list(repair_columns.STORED)
OPEN = ("proposed", "applied", "open", "failed", "halted")
LOG_READ_S = 20.0  # the longest one read of the ledger.entries log may take
MAX_LOG_RECORDS = 5_000_000
LEG_REF_TYPES = ("TRADE_SETTLED", "TRADE_FEE", "POSITION_REALIZED_PNL", "LIQUIDATION")


@dataclass
class Repair:
    repair_id: str
    rule: str
    asset: str
    account_id: int
    symbol: str
    journal_id: str
    ref_type: str
    break_detail: str
    action: str
    policy: str
    status: str
    actor: str = ""
    journal_ids: list[str] = field(default_factory=list)
    voided: list[str] = field(default_factory=list)
    instructions: str = ""
    proposed_ms: int = 0
    applied_ms: int = 0
    confirmed_ms: int = 0
    recheck: str = ""
    updated_ms: int = 0

    def break_key(self) -> tuple[object, ...]:
        return break_key(Break(self.rule, "", self.asset, self.account_id, self.symbol, self.journal_id,
                               self.ref_type, 0, 0, self.break_detail))


def break_key(b: Break) -> tuple[object, ...]:
    """What makes two findings the same break (trade_settlement names its trade only in the detail)."""
    extra = b.detail.split(" has ")[0] if b.rule == "trade_settlement" else ""
    return (*b.key(), extra)


class LedgerLog:
    """The ledger.entries log read back (read_committed): the journals the accounts processor wrote."""

    def __init__(self, bootstrap: str) -> None:
        self.topic = topic_map()["ledger.entries"]
        self.consumer = Consumer(kafka_config(bootstrap, **{
            "group.id": "perpline-recon-repairs", "enable.auto.commit": False, "isolation.level": "read_committed",
            "enable.partition.eof": True, "fetch.wait.max.ms": 10}))

    def find(self, wanted: set[str], at: dict[str, tuple[int, int]] | None = None,
             partitions: set[int] | None = None) -> dict[str, tuple[m.Journal, int, int]]:
        """{journal_id: (journal, partition, offset)} of the wanted ids the log holds (its last copy).
        A journal whose copy says where the sink read it (`at`: partition, offset) is read at that one
        offset; only the others are searched, in `partitions` (the partitions the account's journals
        came from) or all, from the start (bounded: MAX_LOG_RECORDS, LOG_READ_S)."""
        if not wanted:
            return {}
        found: dict[str, tuple[m.Journal, int, int]] = {}
        for journal_id, (part, offset) in sorted((at or {}).items()):
            record = self._one(part, offset) if journal_id in wanted else None
            if record is not None and record.journal_id == journal_id:
                found[journal_id] = (record, part, offset)
        rest = wanted - set(found)
        return {**self._scan(rest, partitions), **found} if rest else found

    def _one(self, part: int, offset: int) -> m.Journal | None:
        """The journal at one offset of the log (None: no such record, or a control record there)."""
        self.consumer.assign([TopicPartition(self.topic, part, offset)])
        deadline = time.monotonic() + LOG_READ_S
        try:
            while time.monotonic() < deadline:
                msg = self.consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        return None
                    continue
                if msg.offset() != offset:
                    return None
                journal: m.Journal = codec.decode("ledger.entries", msg.value())
                return journal
        finally:
            self.consumer.unassign()
        raise TimeoutError(f"ledger.entries {part}@{offset} not read within {LOG_READ_S} s")

    def _scan(self, wanted: set[str], partitions: set[int] | None) -> dict[str, tuple[m.Journal, int, int]]:
        meta = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        parts = [TopicPartition(self.topic, pid, OFFSET_BEGINNING) for pid in sorted(meta.partitions)
                 if partitions is None or pid in partitions]
        if not parts:
            return {}
        self.consumer.assign(parts)
        found: dict[str, tuple[m.Journal, int, int]] = {}
        done: set[int] = set()
        deadline, seen = time.monotonic() + LOG_READ_S, 0
        try:
            while len(done) < len(parts) and time.monotonic() < deadline and seen < MAX_LOG_RECORDS:
                msg = self.consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        done.add(msg.partition())
                    continue
                seen += 1
                journal = codec.decode("ledger.entries", msg.value())
                if journal.journal_id in wanted:
                    found[journal.journal_id] = (journal, msg.partition(), msg.offset())
        finally:
            self.consumer.unassign()
        if len(done) < len(parts):
            raise TimeoutError(f"ledger.entries not read to its end within {LOG_READ_S} s")
        return found


class Repairer:
    def __init__(self, client: Any, producer: Producer | None, ledger_log: LedgerLog | None,
                 rules: list[Rule]) -> None:
        self.client = client
        self.producer = producer
        self.log = ledger_log
        self.rules = {r.name: r for r in rules}

    # --- records ---------------------------------------------------------------------

    def load(self, repair_id: str | None = None, open_only: bool = False) -> list[Repair]:
        where = ["1"]
        if repair_id is not None:
            where.append("repair_id = {rid:String}")
        if open_only:
            where.append(f"status IN {OPEN!r}")
        rows = self.client.query(f"SELECT {', '.join(COLUMNS)} FROM recon_repairs FINAL WHERE {' AND '.join(where)} "
                                 "ORDER BY proposed_ms", parameters={"rid": repair_id or ""})
        return [Repair(**dict(zip(COLUMNS, r, strict=True))) for r in rows.result_rows]

    def save(self, repair: Repair) -> Repair:
        repair.updated_ms = max(int(time.time() * 1000), repair.updated_ms + 1)
        self.client.insert("recon_repairs", [[getattr(repair, c) for c in COLUMNS]], column_names=COLUMNS)
        if self.producer is not None:
            fields = {k: v for k, v in asdict(repair).items() if k in m.ReconRepair.__struct_fields__}
            msg = m.ReconRepair(trace_id="", causation_id=repair.repair_id, ts_ms=repair.updated_ms, **fields)
            self.producer.produce(topic_map()["recon.breaks"], key=repair.rule.encode(), value=codec.encode(msg))
            self.producer.flush(10)
        log.warning("reconciliation repair", extra={"repair": repair.repair_id, "rule": repair.rule,
                                                     "action": repair.action, "status": repair.status})
        return repair

    # --- one pass --------------------------------------------------------------------

    def after_pass(self, found: list[Break]) -> list[Repair]:
        """Plan a repair for every reported break that has none open, apply those the policy allows,
        then re-check every open one. Returns the repairs touched."""
        open_repairs = self.load(open_only=True)
        known = {r.break_key() for r in open_repairs}
        touched = []
        for b in found:
            if break_key(b) in known:
                continue
            known.add(break_key(b))
            repair = self.save(self.plan(b))
            if repair.action == p.HALT:
                repair = self.halt(repair)
            elif repair.policy == p.AUTO and repair.action != p.NONE:
                repair = self.apply(repair, "policy:auto")
            open_repairs.append(repair)
            touched.append(repair)
        return touched + self.recheck(open_repairs)

    def plan(self, b: Break) -> Repair:
        now_ms = int(time.time() * 1000)
        repair = Repair(p.repair_id(break_key(b), now_ms), b.rule, b.asset, b.account_id, b.symbol, b.journal_id,
                        b.ref_type, b.detail[:1000], p.NONE, p.policy_of(b.rule, b.ref_type), "open", proposed_ms=now_ms)
        if b.rule == "matcher_sequence":
            return replace(repair, action=p.HALT, instructions=p.instructions_for(b.rule, b.symbol, b.detail).text)
        if b.rule == "trade_settlement":
            return replace(repair, action=p.REDRIVE, status="proposed")
        if b.rule in p.WALLET_RULES and b.journal_id:
            return wallet_repairs.plan(self, b, repair)
        if b.rule in p.JOURNAL_RULES and b.journal_id:
            action = self._journal_action(b)
            if action is not None:
                return replace(repair, action=action, status="proposed")
        return replace(repair, instructions=p.instructions_for(b.rule, b.symbol, b.detail).text)

    def _journal_action(self, b: Break) -> str | None:
        """One action for the break's journals (a duplicate names several: the copies not in the log)."""
        journal_ids = b.journal_id.split(",")
        logged = self._find(journal_ids) if self.log is not None else {}
        kinds = {p.classify(self._stored(j), logged.get(j, (None,))[0]) for j in journal_ids}
        if b.rule == "duplicate_cause":
            return p.VOID if p.VOID in kinds else None
        if len(kinds) != 1:
            return None
        kind = kinds.pop()
        if kind == p.COMPENSATE and b.rule != "trade_fees":
            return None  # the processor wrote it so and only a fee can be recomputed: an operator's call
        if kind == p.VOID and not p.balanced(self._stored(journal_ids[0])):
            return None  # an unbalanced journal cannot be undone by a balanced one
        return kind

    # --- applying --------------------------------------------------------------------

    def apply(self, repair: Repair, actor: str) -> Repair:
        try:
            posted, voided = self._do(repair)
        except Exception as exc:  # noqa: BLE001 (a repair that cannot be made now is recorded and retried by hand)
            log.error("repair failed", extra={"repair": repair.repair_id, "error": repr(exc)[:500]})
            return self.save(replace(repair, status="failed", actor=actor, recheck=f"failed: {exc!r}"[:1000]))
        return self.save(replace(repair, status="applied", actor=actor, journal_ids=posted, voided=voided,
                                 applied_ms=int(time.time() * 1000)))

    def _do(self, repair: Repair) -> tuple[list[str], list[str]]:
        if repair.rule in p.WALLET_RULES:
            return wallet_repairs.apply(self, repair)
        if repair.action == p.RESINK:
            return self._resink(repair.journal_id.split(",")), []
        if repair.action == p.REDRIVE:
            return self._redrive(repair), []
        if repair.action == p.VOID:
            return self._void(repair)
        if repair.action == p.COMPENSATE:
            return self._compensate(repair), []
        raise ValueError(f"repair {repair.repair_id} ({repair.action}) has nothing to apply")

    def _resink(self, journal_ids: list[str], accounts: set[int] | None = None) -> list[str]:
        """Write the log's journals into ledger_postings again (the newest row of a posting wins)."""
        found = self._find(journal_ids, accounts)
        rows = [row for journal, part, off in found.values() for row in posting_rows(journal, part, off)]
        if rows:
            self.client.insert("ledger_postings", rows, column_names=POSTING_COLUMNS)
        return sorted(found)

    def _redrive(self, repair: Repair) -> list[str]:
        """The trade's legs from the matcher's event onto account.commands (a leg the processor applied is
        a no-op there), then the legs' journals the log holds restored into the ledger's copy."""
        seq = int(repair.break_detail.split()[2])
        payload = self.client.query("SELECT payload FROM matcher_events FINAL WHERE symbol = {s:String} AND seq = "
                                    "{q:UInt64}", parameters={"s": repair.symbol, "q": seq}).result_rows[0][0]
        trade = codec.decode("matcher.events", payload.encode())
        assert self.producer is not None
        for leg in legs(trade):
            self.producer.produce(topic_map()["account.commands"], key=str(leg.account_id).encode(), value=codec.encode(leg))
        self.producer.flush(10)
        wanted = [ids.journal_id(ids.fill_leg_id(repair.symbol, seq, liq), rt) for liq in ("MAKER", "TAKER")
                  for rt in LEG_REF_TYPES]
        lacking = [j for j in wanted if not self._stored(j)]  # only what the copy lacks
        return self._resink(lacking, {trade.maker_account_id, trade.taker_account_id})

    def _void(self, repair: Repair) -> tuple[list[str], list[str]]:
        """Reverse, through the accounts processor and in the ledger only, each journal the log never had."""
        journal_ids = repair.journal_id.split(",")
        logged = self._find(journal_ids)
        posted, voided = [], []
        for n, journal_id in enumerate(j for j in journal_ids if j not in logged):
            account_id, symbol = self._owner(journal_id)
            journals = p.reversal(self._stored(journal_id), label=f"reverse{n}")
            posted += self._post(repair, account_id, symbol, journals, books=False, part=str(n))
            voided.append(journal_id)
        return posted, voided

    def _compensate(self, repair: Repair) -> list[str]:
        """A fee the processor charged at a wrong rate: reversed, and the fee recomputed from the trade."""
        _, symbol, seq_text, liquidity = repair.journal_id.split("/")[0].split(":")
        seq = int(seq_text)
        payload = self.client.query("SELECT payload FROM matcher_events FINAL WHERE symbol = {s:String} AND seq = "
                                    "{q:UInt64}", parameters={"s": symbol, "q": seq}).result_rows[0][0]
        trade = codec.decode("matcher.events", payload.encode())
        account_id = trade.maker_account_id if liquidity == "MAKER" else trade.taker_account_id
        liquidation = bool(self.client.query(
            "SELECT count() FROM ledger_postings FINAL WHERE ref_type = 'LIQUIDATION' AND ref_id = {r:String}",
            parameters={"r": ids.fill_leg_id(symbol, seq, liquidity)}).result_rows[0][0])
        rows = self._stored(repair.journal_id)
        journals = p.fee_compensation(rows, account_id, rows[0][1], p.expected_fee(trade, liquidity, liquidation))
        return self._post(repair, account_id, symbol, journals, books=True, part="0")

    def _post(self, repair: Repair, account_id: int, symbol: str, journals: list[m.RepairJournal], books: bool,
              part: str) -> list[str]:
        assert self.producer is not None and account_id > 0
        assert all(p.journal_sum(j) == 0 for j in journals), "unbalanced repair journal"
        cmd = m.PostRepair(trace_id=repair.repair_id, causation_id=repair.repair_id, ts_ms=int(time.time() * 1000),
                           request_id=f"repair:{repair.repair_id}:{account_id}:{part}", account_id=account_id,
                           repair_id=repair.repair_id, rule=repair.rule, symbol=symbol, books=books, journals=journals)
        self.producer.produce(topic_map()["account.commands"], key=str(account_id).encode(), value=codec.encode(cmd))
        self.producer.flush(10)
        from perpline.accounts.repairs import REF_TYPE, ref_id  # noqa: PLC0415

        return [ids.journal_id(ref_id(repair.repair_id, j.label), REF_TYPE) for j in journals]

    def _find(self, journal_ids: list[str], accounts: set[int] | None = None) -> dict[str, tuple[m.Journal, int, int]]:
        """The journals in the log, read where the sink recorded reading them (one offset each); one the
        copy lacks or misplaces is searched only in the partitions its account's journals came from."""
        assert self.log is not None
        rows = self.client.query(
            "SELECT journal_id, any(account_id), argMax(source_partition, inserted_ms), argMax(source_offset, inserted_ms) "
            "FROM ledger_postings WHERE journal_id IN {j:Array(String)} GROUP BY journal_id",
            parameters={"j": journal_ids}).result_rows
        at = {str(j): (int(part), int(off)) for j, _, part, off in rows}
        owners = (accounts or set()) | {int(a) for _, a, _, _ in rows}
        parts = {int(r[0]) for r in self.client.query(
            "SELECT DISTINCT source_partition FROM ledger_postings WHERE account_id IN {a:Array(UInt64)} "
            "AND ref_type != 'RECON_REPAIR'", parameters={"a": sorted(owners)}).result_rows} if owners else set()
        return self.log.find(set(journal_ids), at, parts or None)

    def _stored(self, journal_id: str) -> list[p.Row]:
        rows = self.client.query("SELECT ledger_account, asset, amount FROM ledger_postings FINAL WHERE journal_id = "
                                 "{j:String} ORDER BY posting_index", parameters={"j": journal_id}).result_rows
        return [(str(a), str(s), Decimal(x)) for a, s, x in rows]

    def _owner(self, journal_id: str) -> tuple[int, str]:
        rows = self.client.query("SELECT any(account_id), any(symbol) FROM ledger_postings FINAL WHERE journal_id = "
                                 "{j:String}", parameters={"j": journal_id}).result_rows
        return int(rows[0][0]), str(rows[0][1])

    def halt(self, repair: Repair) -> Repair:
        now_ms = int(time.time() * 1000)
        self.client.insert("recon_halts", [[repair.symbol, 1, repair.break_detail, repair.repair_id, now_ms]],
                           column_names=["symbol", "halted", "reason", "repair_id", "updated_ms"])
        log.critical("symbol halted by reconciliation", extra={"symbol": repair.symbol, "repair": repair.repair_id,
                                                               "detail": repair.break_detail})
        return self.save(replace(repair, status="halted", actor="policy:never", applied_ms=now_ms))

    # --- re-check --------------------------------------------------------------------

    def recheck(self, repairs: list[Repair]) -> list[Repair]:
        """A repair is confirmed when what it posted is in the ledger and its rule, run over everything,
        no longer finds its break. A halt stays until an operator resumes the symbol."""
        confirmed = []
        pending = [r for r in repairs if r.status in ("applied", "open")]
        now_ms = int(time.time() * 1000)
        for rule_name in sorted({r.rule for r in pending}):
            rule = self.rules.get(rule_name)
            if rule is None:
                continue
            still = {break_key(b) for b in run_rule(self.client, rule, 0, now_ms)}
            for repair in (r for r in pending if r.rule == rule_name):
                if repair.break_key() in still or not self._posted(repair):
                    continue
                text = f"{rule_name} over the whole ledger at {now_ms}: the break is gone"
                confirmed.append(self.save(replace(repair, status="confirmed", confirmed_ms=now_ms, recheck=text)))
        return confirmed

    def _posted(self, repair: Repair) -> bool:
        if not repair.journal_ids:
            return True
        got = self.client.query("SELECT uniqExact(journal_id) FROM ledger_postings WHERE journal_id IN {j:Array(String)}",
                                parameters={"j": repair.journal_ids}).result_rows[0][0]
        return int(got) == len(set(repair.journal_ids))
