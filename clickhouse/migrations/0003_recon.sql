-- Reconciliation: when each row arrived (incremental rules read only what is new), every run, and
-- every break a rule found (clickhouse/queries/*.sql; perpline/recon).
ALTER TABLE ledger_postings ADD COLUMN IF NOT EXISTS inserted_ms Int64 DEFAULT toUnixTimestamp64Milli(now64(3));
ALTER TABLE account_events ADD COLUMN IF NOT EXISTS inserted_ms Int64 DEFAULT toUnixTimestamp64Milli(now64(3));
ALTER TABLE matcher_events ADD COLUMN IF NOT EXISTS inserted_ms Int64 DEFAULT toUnixTimestamp64Milli(now64(3));

CREATE TABLE IF NOT EXISTS recon_runs
(
    run_id       String,
    mode         LowCardinality(String),   -- incremental | full
    started_ms   Int64,
    finished_ms  Int64,
    since_ms     Int64,                     -- rows inserted at or after this were checked (0: everything)
    rules        UInt16,
    breaks       UInt32
)
ENGINE = MergeTree
ORDER BY started_ms;

CREATE TABLE IF NOT EXISTS recon_breaks
(
    run_id          String,
    rule            LowCardinality(String),
    severity        LowCardinality(String),
    asset           String,
    account_id      UInt64,
    symbol          String,
    journal_id      String,
    ref_type        String,
    window_start_ms Int64,
    window_end_ms   Int64,
    detail          String,
    found_ms        Int64
)
ENGINE = MergeTree
ORDER BY (found_ms, rule);
