"""The reconciliation rules: one SQL file each in clickhouse/queries/, run as they are written.

Every rule returns break rows with the same columns (BREAK_COLUMNS): severity and the dimensions
that locate the break (asset, account, symbol, journal, reference type, time window) plus a detail.
Parameters a rule may use: {since_ms} (rows inserted since; 0 on a full pass), {now_ms},
{settle_grace_ms}. Rules compare tables filled by different stages; the reconciler reports a finding
only once the data it judged was complete (perpline.recon.confirm).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perpline import REPO_ROOT

QUERIES_DIR = REPO_ROOT / "clickhouse" / "queries"
BREAK_COLUMNS = ("severity", "asset", "account_id", "symbol", "journal_id", "ref_type", "window_start_ms",
                 "window_end_ms", "detail")
SETTLE_GRACE_MS = 5_000
MAX_BREAKS_PER_RULE = 1_000  # a rule that finds more reports the first 1000 (and the run says so)


@dataclass(frozen=True)
class Rule:
    name: str
    sql: str
    doc: str


@dataclass(frozen=True)
class Break:
    rule: str
    severity: str
    asset: str
    account_id: int
    symbol: str
    journal_id: str
    ref_type: str
    window_start_ms: int
    window_end_ms: int
    detail: str

    def key(self) -> tuple[Any, ...]:
        """What makes two runs' breaks the same break (the detail may change as numbers move)."""
        return (self.rule, self.asset, self.account_id, self.symbol, self.journal_id, self.ref_type)


def load_rules(directory: Path | None = None) -> list[Rule]:
    rules = []
    for path in sorted((directory or QUERIES_DIR).glob("*.sql")):
        text = path.read_text()
        doc = " ".join(line.lstrip("- ").strip() for line in text.splitlines() if line.startswith("--"))
        rules.append(Rule(path.stem, text.strip().rstrip(";"), doc))
    return rules


def run_rule(client: Any, rule: Rule, since_ms: int, now_ms: int) -> list[Break]:
    params = {"since_ms": since_ms, "now_ms": now_ms, "settle_grace_ms": SETTLE_GRACE_MS}
    used = {k: v for k, v in params.items() if "{" + k + ":" in rule.sql}
    # rules name their output columns like the table's (account_id, asset...): let WHERE and GROUP BY
    # mean the table's columns, not the aggregates of the same name
    result = client.query(f"SELECT * FROM ({rule.sql}) LIMIT {MAX_BREAKS_PER_RULE}", parameters=used,
                          settings={"prefer_column_name_to_alias": 1})
    if not result.result_rows:
        return []
    names = list(result.column_names)
    assert tuple(names) == BREAK_COLUMNS, f"rule {rule.name} returns {names}, not {BREAK_COLUMNS}"
    return [Break(rule.name, str(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]), int(r[6]), int(r[7]),
                  str(r[8])) for r in result.result_rows]
