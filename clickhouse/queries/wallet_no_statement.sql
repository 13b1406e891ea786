-- The wallet's statement is the third party (perpline/wallet.py): every DEPOSIT and WITHDRAWAL journal in
-- the ledger must answer to a movement the wallet executed. A journal with no line in wallet_statement
-- (once it is {settle_grace_ms} old: the wallet sends a withdrawal after the exchange debited the user) is
-- money the exchange thinks moved and the wallet never moved. A voided journal, and one an applied
-- repair of this rule reversed, is skipped. Whole-table:
-- a statement line can vanish without a new ledger row.
SELECT 'critical' AS severity, any(asset) AS asset, any(account_id) AS account_id, '' AS symbol, journal_id,
       any(ref_type) AS ref_type, min(ts_ms) AS window_start_ms, max(ts_ms) AS window_end_ms,
       concat('ledger ', any(ref_type), ' of ', toString(abs(sumIf(amount, ledger_account = 'platform:HOT_WALLET'))),
              ' ', any(asset), ': no line in the wallet statement') AS detail
FROM ledger_postings FINAL
WHERE journal_id IN (SELECT DISTINCT journal_id FROM ledger_postings
                     WHERE ref_type IN ('DEPOSIT', 'WITHDRAWAL') AND ts_ms <= {now_ms:Int64} - {settle_grace_ms:Int64}
                       AND journal_id NOT IN (SELECT journal_id FROM wallet_statement))
  AND journal_id NOT IN (SELECT arrayJoin(voided) FROM recon_repairs FINAL WHERE status IN ('applied', 'confirmed'))
  AND journal_id NOT IN (SELECT journal_id FROM recon_repairs FINAL WHERE rule = 'wallet_no_statement'
                           AND action = 'reverse' AND status IN ('applied', 'confirmed'))
GROUP BY journal_id
