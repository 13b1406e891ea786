-- The double-entry ledger: one row per posting. Idempotent by (journal_id, posting_index):
-- a re-sent batch replaces identical rows; read with FINAL (or aggregate by id).
CREATE TABLE IF NOT EXISTS ledger_postings
(
    journal_id      String,
    posting_index   UInt16,
    ref_type        LowCardinality(String),
    ref_id          String,
    account_id      UInt64,
    symbol          LowCardinality(String),
    ledger_account  String,
    asset           LowCardinality(String),
    amount          Decimal(38, 8),
    trace_id        String,
    causation_id    String,
    ts_ms           Int64,
    ts              DateTime64(3, 'UTC') MATERIALIZED fromUnixTimestamp64Milli(ts_ms, 'UTC'),
    source_partition UInt16,
    source_offset   UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (journal_id, posting_index);

-- Every state change the accounts processor published (account.events), for audit and trace lookup.
CREATE TABLE IF NOT EXISTS account_events
(
    source_partition UInt16,
    source_offset   UInt64,
    account_id      UInt64,
    type            LowCardinality(String),
    trace_id        String,
    causation_id    String,
    ts_ms           Int64,
    payload         String
)
ENGINE = ReplacingMergeTree
ORDER BY (source_partition, source_offset);

-- Every matcher event (matcher.events), keyed by (symbol, seq) so a re-emitted event is one row.
CREATE TABLE IF NOT EXISTS matcher_events
(
    symbol          LowCardinality(String),
    seq             UInt64,
    type            LowCardinality(String),
    trace_id        String,
    causation_id    String,
    ts_ms           Int64,
    payload         String
)
ENGINE = ReplacingMergeTree
ORDER BY (symbol, seq);
