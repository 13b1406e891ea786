-- The reconciler's incremental passes read what was inserted since its previous run (inserted_ms):
-- rows arrive in time order, so a min-max index per granule lets a pass skip the history
-- (docs/reconciliation.md, "At scale").
ALTER TABLE ledger_postings ADD INDEX IF NOT EXISTS inserted_ms_minmax inserted_ms TYPE minmax GRANULARITY 1;
ALTER TABLE matcher_events ADD INDEX IF NOT EXISTS inserted_ms_minmax inserted_ms TYPE minmax GRANULARITY 1;
ALTER TABLE account_events ADD INDEX IF NOT EXISTS inserted_ms_minmax inserted_ms TYPE minmax GRANULARITY 1;
ALTER TABLE ledger_postings MATERIALIZE INDEX inserted_ms_minmax;
ALTER TABLE matcher_events MATERIALIZE INDEX inserted_ms_minmax;
ALTER TABLE account_events MATERIALIZE INDEX inserted_ms_minmax
