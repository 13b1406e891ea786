-- The other direction: every movement the wallet executed (a line of wallet_statement, once it is
-- {settle_grace_ms} old: the exchange books a deposit after the wallet received it) must have its DEPOSIT /
-- WITHDRAWAL journal in the ledger. A line without one is money the wallet moved that the ledger does not
-- show. Whole-table over the statement (one row per movement); the ledger is looked up by primary key.
SELECT 'critical' AS severity, asset, account_id, '' AS symbol, journal_id, direction AS ref_type,
       ts_ms AS window_start_ms, ts_ms AS window_end_ms,
       concat('wallet ', direction, ' of ', toString(amount), ' ', asset, ' (', wallet_tx_id, ', request ', request_id,
              '): no journal in the ledger') AS detail
FROM wallet_statement FINAL
WHERE ts_ms <= {now_ms:Int64} - {settle_grace_ms:Int64}
  AND journal_id NOT IN (SELECT journal_id FROM ledger_postings
                         WHERE journal_id IN (SELECT journal_id FROM wallet_statement)
                           AND ref_type IN ('DEPOSIT', 'WITHDRAWAL'))
