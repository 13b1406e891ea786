-- Repairs of reconciliation breaks (perpline/recon/repairs.py, docs/reconciliation.md): one row per
-- repair, rewritten (newest updated_ms wins) as it moves proposed -> applied -> confirmed. What a
-- repair posted are RECON_REPAIR journals in ledger_postings (or, for a restored copy, the journals
-- the ledger.entries log holds); `voided` names the journals a repair reversed, which the journal
-- rules then skip.
CREATE TABLE IF NOT EXISTS recon_repairs
(
    repair_id     String,
    rule          LowCardinality(String),
    asset         String,
    account_id    UInt64,
    symbol        String,
    journal_id    String,
    ref_type      String,
    break_detail  String,
    action        LowCardinality(String),   -- resink | void | compensate | redrive | halt | none
    policy        LowCardinality(String),   -- auto | propose | never
    status        LowCardinality(String),   -- proposed | applied | confirmed | failed | halted | open
    actor         String,                   -- policy:auto | operator:<name>
    journal_ids   Array(String),            -- what was posted (or restored)
    voided        Array(String),            -- journals this repair reversed
    instructions  String,                   -- what an operator must look at
    proposed_ms   Int64,
    applied_ms    Int64,
    confirmed_ms  Int64,
    recheck       String,                   -- the re-check that confirmed the break is gone
    updated_ms    Int64
)
ENGINE = ReplacingMergeTree(updated_ms)
ORDER BY repair_id;

-- Symbols halted by the reconciler (a matcher sequence gap): new orders are refused, cancels allowed.
CREATE TABLE IF NOT EXISTS recon_halts
(
    symbol      String,
    halted      UInt8,
    reason      String,
    repair_id   String,
    updated_ms  Int64
)
ENGINE = ReplacingMergeTree(updated_ms)
ORDER BY symbol;
