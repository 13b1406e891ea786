-- The trial balance per asset is zero: every debit has its credit.
SELECT 'critical' AS severity, asset, toUInt64(0) AS account_id, '' AS symbol, '' AS journal_id, '' AS ref_type,
       min(ts_ms) AS window_start_ms, max(ts_ms) AS window_end_ms,
       concat('all postings sum to ', toString(sum(amount))) AS detail
FROM ledger_postings FINAL
GROUP BY asset
HAVING sum(amount) != 0
