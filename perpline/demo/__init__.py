"""Simulated traders for `perpline up --demo`: they use the public API like any client."""
