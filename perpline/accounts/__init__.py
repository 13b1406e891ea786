"""The accounts domain: pure state and rules, no I/O. pipelines/accounts.py runs it on Quix."""
