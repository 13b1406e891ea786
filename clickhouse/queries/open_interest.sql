-- Per symbol, long open interest equals short open interest (latest position of every account).
-- Eventual, as ledger_vs_state.
SELECT 'critical' AS severity, '' AS asset, toUInt64(0) AS account_id, symbol, '' AS journal_id, '' AS ref_type,
       toInt64(0) AS window_start_ms, max(ts_ms) AS window_end_ms,
       concat('long - short = ', toString(sum(size))) AS detail
FROM (SELECT account_id, JSONExtractString(payload, 'symbol') AS symbol,
             toDecimal128(JSONExtractString(argMax(payload, source_offset), 'size'), 8) AS size, max(ts_ms) AS ts_ms
      FROM account_events FINAL WHERE type = 'position'
      GROUP BY account_id, symbol)
GROUP BY symbol
HAVING sum(size) != 0
