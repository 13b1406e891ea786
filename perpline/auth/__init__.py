"""Users, API keys and request signing (Binance-style HMAC-SHA256)."""
