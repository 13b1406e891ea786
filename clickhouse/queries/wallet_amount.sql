-- A movement the wallet executed and the ledger booked must be the same amount: the wallet's line against
-- what the journal moved through platform HOT_WALLET (+ for a deposit, - for a withdrawal), counting the
-- RECON_REPAIR journals of an applied or confirmed wallet_amount repair of that journal (the difference
-- booked), so a repaired movement is whole again.
SELECT 'critical' AS severity, s.asset AS asset, s.account_id AS account_id, '' AS symbol, s.journal_id AS journal_id,
       s.direction AS ref_type, s.ts_ms AS window_start_ms, s.ts_ms AS window_end_ms,
       concat('wallet ', s.direction, ' of ', toString(s.amount), ' ', s.asset, ' (', s.wallet_tx_id,
              '), the ledger moved ', toString(if(s.direction = 'DEPOSIT', l.hot, -l.hot))) AS detail
FROM (SELECT wallet_tx_id, direction, account_id, asset, amount, journal_id, ts_ms FROM wallet_statement FINAL) AS s
INNER JOIN (
    SELECT target, sum(amount) AS hot FROM (
        SELECT journal_id AS target, amount FROM ledger_postings FINAL
        WHERE journal_id IN (SELECT journal_id FROM wallet_statement) AND ref_type IN ('DEPOSIT', 'WITHDRAWAL')
          AND ledger_account = 'platform:HOT_WALLET'
        UNION ALL
        SELECT c.target AS target, p.amount AS amount
        FROM (SELECT journal_id, ledger_account, amount FROM ledger_postings FINAL
              WHERE journal_id IN (SELECT arrayJoin(journal_ids) FROM recon_repairs FINAL WHERE rule = 'wallet_amount')) AS p
        INNER JOIN (SELECT arrayJoin(journal_ids) AS repair_journal, journal_id AS target FROM recon_repairs FINAL
                    WHERE rule = 'wallet_amount' AND status IN ('applied', 'confirmed')) AS c
            ON p.journal_id = c.repair_journal
        WHERE p.ledger_account = 'platform:HOT_WALLET')
    GROUP BY target) AS l ON l.target = s.journal_id
WHERE s.amount != if(s.direction = 'DEPOSIT', l.hot, -l.hot)
  AND s.journal_id NOT IN (SELECT arrayJoin(voided) FROM recon_repairs FINAL WHERE status IN ('applied', 'confirmed'))
