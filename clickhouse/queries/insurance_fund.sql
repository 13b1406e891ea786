-- The insurance fund moves only with liquidations.
SELECT 'critical' AS severity, asset, account_id, symbol, journal_id, ref_type,
       ts_ms AS window_start_ms, ts_ms AS window_end_ms, concat('insurance fund moved by ', ref_type) AS detail
FROM ledger_postings FINAL
WHERE ledger_account = 'platform:INSURANCE_FUND' AND ref_type != 'LIQUIDATION' AND inserted_ms >= {since_ms:Int64}
