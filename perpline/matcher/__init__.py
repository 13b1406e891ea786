"""The matcher: core.py (pure, compiled with mypyc) and its shell (WAL, snapshots, Kafka runner)."""
