"""Perpetual risk: index and mark price, funding, liquidation (docs/risk.md)."""
