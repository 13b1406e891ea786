-- No frozen amount outlives its orders: an account whose every order is closed holds nothing in
-- ORDER_MARGIN. Eventual, as ledger_vs_state.
SELECT 'critical' AS severity, l.coin AS asset, l.acct AS account_id, '' AS symbol, '' AS journal_id,
       '' AS ref_type, toInt64(0) AS window_start_ms, toInt64(0) AS window_end_ms,
       concat('ORDER_MARGIN holds ', toString(l.frozen), ' with no open order') AS detail
FROM (SELECT toUInt64(splitByChar(':', ledger_account)[2]) AS acct, asset AS coin, -sum(amount) AS frozen
      FROM ledger_postings FINAL WHERE ledger_account LIKE 'user:%:ORDER_MARGIN'
      GROUP BY acct, coin HAVING frozen != 0) AS l
LEFT JOIN (SELECT account_id, countIf(status IN ('NEW', 'PARTIALLY_FILLED')) AS open_orders
           FROM (SELECT account_id, JSONExtractString(argMax(payload, source_offset), 'order', 'status') AS status
                 FROM account_events FINAL WHERE type = 'order'
                 GROUP BY account_id, JSONExtractUInt(payload, 'order', 'order_id') AS order_id)
           GROUP BY account_id) AS o
  ON o.account_id = l.acct
WHERE o.open_orders = 0
