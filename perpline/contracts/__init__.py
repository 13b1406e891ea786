"""Shared by every component: units, instruments, messages, topics, result codes.

Imports only the standard library, msgspec and yaml, so the matcher can depend on it.
"""
