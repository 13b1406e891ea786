-- The instruments' fee rates, for the reconciliation rule that recomputes every trade's fees
-- (trade_fees.sql). Written by the reconciler from instruments.yaml at start; one row per symbol.
CREATE TABLE IF NOT EXISTS instruments
(
    symbol          String,
    maker_fee_rate  Decimal(18, 8),
    taker_fee_rate  Decimal(18, 8),
    updated_ms      Int64
)
ENGINE = ReplacingMergeTree(updated_ms)
ORDER BY symbol;
