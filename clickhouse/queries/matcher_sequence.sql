-- The matcher's seq per symbol has no gap and no duplicate: 1..N, N rows.
SELECT 'critical' AS severity, '' AS asset, toUInt64(0) AS account_id, symbol, '' AS journal_id, '' AS ref_type,
       min(ts_ms) AS window_start_ms, max(ts_ms) AS window_end_ms,
       concat('seq 1..', toString(max(seq)), ' but ', toString(count()), ' events') AS detail
FROM matcher_events FINAL
GROUP BY symbol
HAVING count() != max(seq) OR min(seq) != 1
