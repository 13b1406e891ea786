-- Every trade is settled exactly twice, maker and taker (a TRADE_SETTLED journal per leg), once it is
-- older than {settle_grace_ms} (settlement runs behind matching by design).
SELECT 'critical' AS severity, '' AS asset, toUInt64(0) AS account_id, t.symbol AS symbol, '' AS journal_id,
       'TRADE_SETTLED' AS ref_type, t.ts_ms AS window_start_ms, t.ts_ms AS window_end_ms,
       concat('trade seq ', toString(t.seq), ' has ', toString(count(j.ref_id)), ' settlement legs') AS detail
FROM (SELECT symbol, seq, ts_ms FROM matcher_events FINAL
      WHERE type = 'trade' AND inserted_ms >= {since_ms:Int64} - {settle_grace_ms:Int64}
        AND inserted_ms < {now_ms:Int64} - {settle_grace_ms:Int64}) AS t
LEFT JOIN (SELECT DISTINCT symbol, ref_id FROM ledger_postings FINAL WHERE ref_type = 'TRADE_SETTLED') AS j
  ON j.symbol = t.symbol AND (j.ref_id = concat('fill:', t.symbol, ':', toString(t.seq), ':MAKER')
                              OR j.ref_id = concat('fill:', t.symbol, ':', toString(t.seq), ':TAKER'))
GROUP BY t.symbol, t.seq, t.ts_ms
HAVING count(j.ref_id) != 2
