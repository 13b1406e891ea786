-- Every journal sums to zero per asset. Incremental: journals with a row inserted since {since_ms} (a full
-- pass, {since_ms} = 0, reads every journal without building the set of their ids).
SELECT 'critical' AS severity, asset, any(account_id) AS account_id, any(symbol) AS symbol, journal_id,
       any(ref_type) AS ref_type, min(ts_ms) AS window_start_ms, max(ts_ms) AS window_end_ms,
       concat('postings sum to ', toString(sum(amount))) AS detail
FROM ledger_postings FINAL
WHERE {since_ms:Int64} = 0
   OR journal_id IN (SELECT journal_id FROM ledger_postings WHERE {since_ms:Int64} > 0 AND inserted_ms >= {since_ms:Int64})
GROUP BY journal_id, asset
HAVING sum(amount) != 0
