-- Every trade is settled exactly twice, maker and taker (a TRADE_SETTLED journal per leg), once it is
-- older than {settle_grace_ms} (settlement runs behind matching by design). A leg's journal id is derived
-- from the trade (fill:<symbol>:<seq>:<MAKER|TAKER>/TRADE_SETTLED), so the legs are looked up by the
-- ledger's primary key, not by scanning it.
SELECT 'critical' AS severity, '' AS asset, toUInt64(0) AS account_id, t.symbol AS symbol, '' AS journal_id,
       'TRADE_SETTLED' AS ref_type, t.ts_ms AS window_start_ms, t.ts_ms AS window_end_ms,
       concat('trade seq ', toString(t.seq), ' has ', toString(countIf(j.journal_id != '')), ' settlement legs') AS detail
FROM (SELECT symbol, seq, ts_ms, concat('fill:', symbol, ':', toString(seq), ':', leg, '/TRADE_SETTLED') AS leg_journal
      FROM matcher_events FINAL
      ARRAY JOIN ['MAKER', 'TAKER'] AS leg
      WHERE type = 'trade' AND inserted_ms >= {since_ms:Int64} - {settle_grace_ms:Int64}
        AND inserted_ms < {now_ms:Int64} - {settle_grace_ms:Int64}) AS t
LEFT JOIN (SELECT DISTINCT journal_id FROM ledger_postings
           WHERE journal_id IN (SELECT concat('fill:', symbol, ':', toString(seq), ':', leg, '/TRADE_SETTLED')
                                FROM matcher_events
                                ARRAY JOIN ['MAKER', 'TAKER'] AS leg
                                WHERE type = 'trade' AND inserted_ms >= {since_ms:Int64} - {settle_grace_ms:Int64}
                                  AND inserted_ms < {now_ms:Int64} - {settle_grace_ms:Int64})) AS j
  ON j.journal_id = t.leg_journal
GROUP BY t.symbol, t.seq, t.ts_ms
HAVING countIf(j.journal_id != '') != 2
