-- One cause, one journal: the same reference (type, id, account) booked under two journal ids is a
-- journal written twice (journal ids are derived from the cause, so a copy needs a new id). No FINAL: a
-- posting written twice is still one journal id.
SELECT 'critical' AS severity, first_asset AS asset, acct AS account_id, sym AS symbol,
       arrayStringConcat(ids, ',') AS journal_id, rtype AS ref_type, t0 AS window_start_ms, t1 AS window_end_ms,
       concat('reference ', rid, ' booked ', toString(length(ids)), ' times') AS detail
FROM (SELECT ref_type AS rtype, ref_id AS rid, account_id AS acct, any(asset) AS first_asset, any(symbol) AS sym,
             arraySort(groupUniqArray(journal_id)) AS ids, min(ts_ms) AS t0, max(ts_ms) AS t1
      FROM ledger_postings
      WHERE journal_id NOT IN (SELECT arrayJoin(voided) FROM recon_repairs FINAL WHERE status IN ('applied', 'confirmed'))
        AND ({since_ms:Int64} = 0
             OR ref_id IN (SELECT ref_id FROM ledger_postings WHERE {since_ms:Int64} > 0 AND inserted_ms >= {since_ms:Int64}))
      GROUP BY ref_type, ref_id, account_id
      HAVING uniqExact(journal_id) > 1)
