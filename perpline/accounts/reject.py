"""Reject: a request the accounts processor refuses, with its code (perpline.contracts.codes).

A module of its own so that the idempotency memory (perpline.accounts.memory), which every other
accounts module imports, can raise it too; perpline.accounts.requests re-exports it."""

from __future__ import annotations

from perpline.contracts.codes import Code


class Reject(Exception):
    def __init__(self, code: Code, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
