-- Per account and asset, the ledger's balance (minus the sum of the user's postings: they are credit
-- balances) equals the latest wallet the accounts processor published (account.events). Eventual: the
-- sink writes the two tables apart, so only a difference that persists is a break.
SELECT 'critical' AS severity, s.asset AS asset, s.account_id AS account_id, '' AS symbol, '' AS journal_id,
       '' AS ref_type, toInt64(0) AS window_start_ms, s.ts_ms AS window_end_ms,
       concat('ledger ', toString(l.balance), ' vs state ', toString(s.wallet)) AS detail
FROM (SELECT account_id, JSONExtractString(payload, 'asset') AS asset,
             toDecimal128(JSONExtractString(argMax(payload, source_offset), 'wallet'), 8) AS wallet,
             max(ts_ms) AS ts_ms
      FROM account_events FINAL WHERE type = 'balance'
      GROUP BY account_id, asset) AS s
LEFT JOIN (SELECT toUInt64(splitByChar(':', ledger_account)[2]) AS acct, asset AS coin, -sum(amount) AS balance
           FROM ledger_postings FINAL WHERE ledger_account LIKE 'user:%'
           GROUP BY acct, coin) AS l
  ON l.acct = s.account_id AND l.coin = s.asset
WHERE l.balance != s.wallet
