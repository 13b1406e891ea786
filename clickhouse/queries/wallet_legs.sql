-- Money enters and leaves only through the wallet: every DEPOSIT and WITHDRAWAL journal moves the same
-- amount between platform HOT_WALLET and the user's SPOT, and nothing else. (So HOT_WALLET always
-- equals deposits - withdrawals.)
SELECT 'critical' AS severity, any(asset) AS asset, any(account_id) AS account_id, '' AS symbol, journal_id,
       any(ref_type) AS ref_type, min(ts_ms) AS window_start_ms, max(ts_ms) AS window_end_ms,
       concat('postings: ', arrayStringConcat(groupArray(concat(ledger_account, ' ', toString(amount))), ', ')) AS detail
FROM ledger_postings FINAL
WHERE ref_type IN ('DEPOSIT', 'WITHDRAWAL') AND journal_id NOT IN (SELECT arrayJoin(voided) FROM recon_repairs FINAL WHERE status IN ('applied', 'confirmed'))
  AND ({since_ms:Int64} = 0
       OR journal_id IN (SELECT journal_id FROM ledger_postings WHERE {since_ms:Int64} > 0 AND inserted_ms >= {since_ms:Int64}))
GROUP BY journal_id
HAVING countIf(ledger_account = 'platform:HOT_WALLET') != 1
    OR countIf(ledger_account LIKE 'user:%:SPOT') != 1
    OR count() != 2
    OR sumIf(amount, ledger_account = 'platform:HOT_WALLET') != -sumIf(amount, ledger_account LIKE 'user:%:SPOT')
