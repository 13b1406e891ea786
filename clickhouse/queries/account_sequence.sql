-- Each account's journals carry account_seq 1, 2, 3... in the order the accounts processor wrote them:
-- a number missing or used twice is a lost or doubled journal.
SELECT 'critical' AS severity, '' AS asset, account_id, '' AS symbol, '' AS journal_id, '' AS ref_type,
       min(ts_ms) AS window_start_ms, max(ts_ms) AS window_end_ms,
       concat('journals ', toString(uniqExact(journal_id)), ', numbers ', toString(uniqExact(seq_no)),
              ', highest ', toString(max(seq_no))) AS detail
FROM (SELECT account_id, journal_id, any(account_seq) AS seq_no, min(ts_ms) AS ts_ms
      FROM ledger_postings FINAL WHERE account_seq > 0
        AND journal_id NOT IN (SELECT arrayJoin(voided) FROM recon_repairs FINAL WHERE status IN ('applied', 'confirmed')) GROUP BY account_id, journal_id)
WHERE account_id IN (SELECT account_id FROM ledger_postings WHERE inserted_ms >= {since_ms:Int64})
GROUP BY account_id
HAVING uniqExact(journal_id) != max(seq_no) OR uniqExact(seq_no) != uniqExact(journal_id)
