-- The simulated wallet's own statement (perpline/wallet.py, docs/reconciliation.md "The wallet's statement"):
-- one row per movement the wallet executed (a deposit received on chain, a withdrawal sent), written from
-- the wallet's own log (wallet.statement), never from the ledger. It is the third party the rules
-- wallet_no_statement, wallet_not_booked and wallet_amount check the ledger's DEPOSIT / WITHDRAWAL journals
-- against. A movement is one row per wallet_tx_id (a re-imported line replaces itself).
CREATE TABLE IF NOT EXISTS wallet_statement
(
    wallet_tx_id   String,
    direction      LowCardinality(String),   -- DEPOSIT | WITHDRAWAL
    account_id     UInt64,
    asset          LowCardinality(String),
    amount         Decimal(38, 8),           -- > 0, in the asset
    ref_id         String,                   -- the exchange's reference: the journal's cause (wallet:<account>:<request>)
    journal_id     String,                   -- the ledger journal that answers to it (<ref_id>/<direction>)
    request_id     String,
    ts_ms          Int64,                    -- when the wallet executed it
    inserted_ms    Int64 DEFAULT toUnixTimestamp64Milli(now64(3))
)
ENGINE = ReplacingMergeTree
ORDER BY wallet_tx_id
