-- Funding nets to zero per round, up to rounding in the platform's favour: FUNDING_CLEARING may keep at
-- most one minor unit per position of the round, and never pays out more than it took in. A round is judged
-- once its last posting is {settle_grace_ms} old (its legs come from every payer's and receiver's account,
-- stored apart), and a break is reported only when a second run finds it again (EVENTUAL).
SELECT 'warning' AS severity, any(asset) AS asset, toUInt64(0) AS account_id, any(symbol) AS symbol, '' AS journal_id,
       'FUNDING' AS ref_type, min(ts_ms) AS window_start_ms, max(ts_ms) AS window_end_ms,
       concat('round ', round_id, ': clearing ', toString(sum(amount)), ' over ', toString(uniqExact(account_id)),
              ' positions') AS detail
FROM (SELECT arrayStringConcat(arraySlice(splitByChar(':', ref_id), 1, 3), ':') AS round_id, asset, symbol,
             account_id, amount, ts_ms, inserted_ms
      FROM ledger_postings FINAL
      WHERE ref_type = 'FUNDING' AND ledger_account = 'platform:FUNDING_CLEARING'
        AND ts_ms >= {since_ms:Int64} - 86400000)
GROUP BY round_id
HAVING max(inserted_ms) < {now_ms:Int64} - {settle_grace_ms:Int64}
   AND (sum(amount) > 0 OR -sum(amount) > toDecimal128(uniqExact(account_id), 8) * toDecimal128('0.00000001', 8))
