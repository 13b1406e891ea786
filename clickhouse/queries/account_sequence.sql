-- Each account's journals carry account_seq 1, 2, 3... in the order the accounts processor wrote them:
-- a number missing or used twice is a lost or doubled journal. Incremental: accounts with a row inserted
-- since {since_ms}. No FINAL: a posting written twice is still one journal with one number.
SELECT 'critical' AS severity, '' AS asset, account_id, '' AS symbol, '' AS journal_id, '' AS ref_type,
       min(ts_ms) AS window_start_ms, max(ts_ms) AS window_end_ms,
       concat('journals ', toString(uniqExact(journal_id)), ', numbers ', toString(uniqExact(seq_no)),
              ', highest ', toString(max(seq_no))) AS detail
FROM (SELECT account_id, journal_id, any(account_seq) AS seq_no, min(ts_ms) AS ts_ms
      FROM ledger_postings WHERE account_seq > 0
        AND journal_id NOT IN (SELECT arrayJoin(voided) FROM recon_repairs FINAL WHERE status IN ('applied', 'confirmed'))
        AND ({since_ms:Int64} = 0
             OR account_id IN (SELECT account_id FROM ledger_postings WHERE {since_ms:Int64} > 0 AND inserted_ms >= {since_ms:Int64}))
      GROUP BY account_id, journal_id)
GROUP BY account_id
HAVING uniqExact(journal_id) != max(seq_no) OR uniqExact(seq_no) != uniqExact(journal_id)
