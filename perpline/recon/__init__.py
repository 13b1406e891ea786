"""Continuous reconciliation of the ledger against itself, the matcher and the accounts' state."""
