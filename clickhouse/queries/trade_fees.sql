-- Every settled leg of a trade was charged exactly its fee: price x quantity x the instrument's maker or
-- taker rate, rounded up to 1e-8 (a liquidation leg pays none), as the FEE_REVENUE side of its TRADE_FEE
-- journal. Trades older than {settle_grace_ms}, inserted since {since_ms}.
SELECT 'critical' AS severity, 'USDT' AS asset, toUInt64(0) AS account_id, t.symbol AS symbol,
       concat(t.leg_id, '/TRADE_FEE') AS journal_id, 'TRADE_FEE' AS ref_type, t.ts_ms AS window_start_ms,
       t.ts_ms AS window_end_ms,
       concat('fee charged ', toString(ifNull(f.charged, toDecimal128(0, 8))), ', expected ', toString(t.expected)) AS detail
FROM (SELECT tr.symbol AS symbol, tr.ts_ms AS ts_ms, concat('fill:', tr.symbol, ':', toString(tr.seq), ':', leg) AS leg_id,
             if(leg = 'MAKER', i.maker_fee_rate, i.taker_fee_rate) AS rate,
             toDecimal128(ceil(toDecimal128(tr.price, 8) * toDecimal128(tr.qty, 8) * rate, 8), 8) AS full_fee,
             if(leg_id IN (SELECT ref_id FROM ledger_postings WHERE ref_type = 'LIQUIDATION'), toDecimal128(0, 8),
                full_fee) AS expected
      FROM (SELECT symbol, seq, ts_ms, JSONExtractString(payload, 'price') AS price,
                   JSONExtractString(payload, 'quantity') AS qty
            FROM matcher_events FINAL
            WHERE type = 'trade' AND inserted_ms >= {since_ms:Int64} - {settle_grace_ms:Int64}
              AND inserted_ms < {now_ms:Int64} - {settle_grace_ms:Int64}) AS tr
      ARRAY JOIN ['MAKER', 'TAKER'] AS leg
      INNER JOIN (SELECT symbol, argMax(maker_fee_rate, updated_ms) AS maker_fee_rate,
                         argMax(taker_fee_rate, updated_ms) AS taker_fee_rate
                  FROM instruments GROUP BY symbol) AS i ON i.symbol = tr.symbol) AS t
LEFT JOIN (SELECT ref_id, -sum(amount) AS charged FROM ledger_postings FINAL
           WHERE ref_type = 'TRADE_FEE' AND ledger_account = 'platform:FEE_REVENUE'
             AND journal_id NOT IN (SELECT arrayJoin(voided) FROM recon_repairs FINAL WHERE status IN ('applied', 'confirmed')) GROUP BY ref_id) AS f
  ON f.ref_id = t.leg_id
WHERE ifNull(f.charged, toDecimal128(0, 8)) != t.expected
