"""Market data the API serves: candles and the 24h ticker (perpline.market.candles)."""
