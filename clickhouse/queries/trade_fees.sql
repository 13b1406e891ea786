-- Every settled leg of a trade was charged exactly its fee: price x quantity x the instrument's maker or
-- taker rate, rounded up to 1e-8 (a liquidation leg pays none), as the FEE_REVENUE side of its TRADE_FEE
-- journal, plus the FEE_REVENUE side of a `compensate` repair of that fee (its reversal and the fee
-- recomputed, RECON_REPAIR journals named in recon_repairs). Trades older than {settle_grace_ms}, inserted
-- since {since_ms}. Journal ids are derived from the leg (<leg>/TRADE_FEE, <leg>/LIQUIDATION), so the
-- ledger is read by its primary key.
SELECT 'critical' AS severity, 'USDT' AS asset, toUInt64(0) AS account_id, t.symbol AS symbol,
       concat(t.leg_id, '/TRADE_FEE') AS journal_id, 'TRADE_FEE' AS ref_type, t.ts_ms AS window_start_ms,
       t.ts_ms AS window_end_ms,
       concat('fee charged ', toString(ifNull(f.charged, toDecimal128(0, 8))), ', expected ', toString(t.expected)) AS detail
FROM (SELECT tr.symbol AS symbol, tr.ts_ms AS ts_ms, concat('fill:', tr.symbol, ':', toString(tr.seq), ':', leg) AS leg_id,
             if(leg = 'MAKER', i.maker_fee_rate, i.taker_fee_rate) AS rate,
             toDecimal128(ceil(toDecimal128(tr.price, 8) * toDecimal128(tr.qty, 8) * rate, 8), 8) AS full_fee,
             if(concat(leg_id, '/LIQUIDATION') IN (
                    SELECT DISTINCT journal_id FROM ledger_postings
                    WHERE journal_id IN (SELECT concat('fill:', symbol, ':', toString(seq), ':', side, '/LIQUIDATION')
                                         FROM matcher_events ARRAY JOIN ['MAKER', 'TAKER'] AS side
                                         WHERE type = 'trade' AND inserted_ms >= {since_ms:Int64} - {settle_grace_ms:Int64}
                                           AND inserted_ms < {now_ms:Int64} - {settle_grace_ms:Int64})),
                toDecimal128(0, 8), full_fee) AS expected
      FROM (SELECT symbol, seq, ts_ms, JSONExtractString(payload, 'price') AS price,
                   JSONExtractString(payload, 'quantity') AS qty
            FROM matcher_events FINAL
            WHERE type = 'trade' AND inserted_ms >= {since_ms:Int64} - {settle_grace_ms:Int64}
              AND inserted_ms < {now_ms:Int64} - {settle_grace_ms:Int64}) AS tr
      ARRAY JOIN ['MAKER', 'TAKER'] AS leg
      INNER JOIN (SELECT symbol, argMax(maker_fee_rate, updated_ms) AS maker_fee_rate,
                         argMax(taker_fee_rate, updated_ms) AS taker_fee_rate
                  FROM instruments GROUP BY symbol) AS i ON i.symbol = tr.symbol) AS t
LEFT JOIN (SELECT leg_id, -sum(amount) AS charged
           FROM (SELECT ref_id AS leg_id, amount FROM ledger_postings FINAL
                 WHERE journal_id IN (SELECT concat('fill:', symbol, ':', toString(seq), ':', side, '/TRADE_FEE')
                                      FROM matcher_events ARRAY JOIN ['MAKER', 'TAKER'] AS side
                                      WHERE type = 'trade' AND inserted_ms >= {since_ms:Int64} - {settle_grace_ms:Int64}
                                        AND inserted_ms < {now_ms:Int64} - {settle_grace_ms:Int64})
                   AND ledger_account = 'platform:FEE_REVENUE'
                   AND journal_id NOT IN (SELECT arrayJoin(voided) FROM recon_repairs FINAL
                                          WHERE status IN ('applied', 'confirmed'))
                 UNION ALL
                 SELECT c.leg_id AS leg_id, p.amount AS amount
                 FROM (SELECT journal_id, amount FROM ledger_postings FINAL
                       WHERE ref_type = 'RECON_REPAIR' AND ledger_account = 'platform:FEE_REVENUE'
                         AND journal_id IN (SELECT arrayJoin(journal_ids) FROM recon_repairs FINAL
                                            WHERE action = 'compensate' AND status IN ('applied', 'confirmed'))) AS p
                 INNER JOIN (SELECT arrayJoin(journal_ids) AS posted, replaceOne(journal_id, '/TRADE_FEE', '') AS leg_id
                             FROM recon_repairs FINAL
                             WHERE action = 'compensate' AND status IN ('applied', 'confirmed')) AS c
                   ON c.posted = p.journal_id)
           GROUP BY leg_id) AS f
  ON f.leg_id = t.leg_id
WHERE ifNull(f.charged, toDecimal128(0, 8)) != t.expected
