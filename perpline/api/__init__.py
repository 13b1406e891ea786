"""The REST API: native /api/v1 (and later the Binance-compatible /fapi). Holds no authority over balances."""
