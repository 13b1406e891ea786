-- Funding nets to zero per round, up to rounding in the platform's favour: FUNDING_CLEARING may keep at
-- most one minor unit per position of the round, and never pays out more than it took in.
SELECT 'warning' AS severity, any(asset) AS asset, toUInt64(0) AS account_id, any(symbol) AS symbol, '' AS journal_id,
       'FUNDING' AS ref_type, min(ts_ms) AS window_start_ms, max(ts_ms) AS window_end_ms,
       concat('round ', round_id, ': clearing ', toString(sum(amount)), ' over ', toString(uniqExact(account_id)),
              ' positions') AS detail
FROM (SELECT arrayStringConcat(arraySlice(splitByChar(':', ref_id), 1, 3), ':') AS round_id, asset, symbol,
             account_id, amount, ts_ms
      FROM ledger_postings FINAL
      WHERE ref_type = 'FUNDING' AND ledger_account = 'platform:FUNDING_CLEARING'
        AND ts_ms >= {since_ms:Int64} - 86400000)
GROUP BY round_id
HAVING sum(amount) > 0 OR -sum(amount) > toDecimal128(uniqExact(account_id), 8) * toDecimal128('0.00000001', 8)
