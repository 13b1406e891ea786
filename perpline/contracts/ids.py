"""Identifiers: random trace ids at the edge, deterministic ids everywhere else."""

from __future__ import annotations

import hashlib
import uuid

ORDER_SEQ_BITS = 32
MAX_CLIENT_ORDER_ID_CHARS = 36


def new_trace_id() -> str:
    return uuid.uuid4().hex


def new_request_id() -> str:
    return uuid.uuid4().hex


def order_id_for(account_id: int, account_order_seq: int) -> int:
    """Globally unique, deterministic order id: the account id and its own order counter."""
    assert 0 < account_id < (1 << 30), "account id out of range"
    assert 0 < account_order_seq < (1 << ORDER_SEQ_BITS), "order counter out of range"
    return (account_id << ORDER_SEQ_BITS) | account_order_seq


def account_of_order(order_id: int) -> int:
    return order_id >> ORDER_SEQ_BITS


def fill_leg_id(symbol: str, seq: int, liquidity: str) -> str:
    return f"fill:{symbol}:{seq}:{liquidity}"


def liquidation_client_id(position_version: int, attempt: int) -> str:
    """The client order id of a liquidation order: which position version and attempt it closes."""
    return f"liq-{position_version}-{attempt}"


def parse_liquidation_client_id(client_order_id: str) -> tuple[int, int] | None:
    """(position version, attempt) of a liquidation order's client id, or None for any other id."""
    parts = client_order_id.split("-")
    if len(parts) != 3 or parts[0] != "liq" or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[1]), int(parts[2])


def journal_id(cause_id: str, ref_type: str) -> str:
    """A journal's id, derived from its cause so a replay rewrites the same rows. The cause must be
    unique across accounts: matcher seqs and order ids are; a client's request id is not (see wallet_cause)."""
    return f"{cause_id}/{ref_type}"


def wallet_cause(account_id: int, request_id: str) -> str:
    """The cause of a deposit or withdrawal: the client's request id (an Idempotency-Key, unique per account
    only) scoped by its account, so two accounts' "dep-1" never share a journal id."""
    return f"wallet:{account_id}:{request_id}"


def default_client_order_id(request_id: str) -> str:
    """The client order id of an order placed without one: "pl-" + the request id (its Idempotency-Key)
    when that fits the 36 characters a client order id may have, else "ph-" + 33 hex characters of the
    key's SHA-256. Never a truncation: two keys that share a prefix are two orders (a resend of one
    key finds its own order again); the "ph-" prefix keeps a hashed id apart from any "pl-" one."""
    plain = "pl-" + request_id
    if len(plain) <= MAX_CLIENT_ORDER_ID_CHARS:
        return plain
    return "ph-" + hashlib.sha256(request_id.encode()).hexdigest()[:MAX_CLIENT_ORDER_ID_CHARS - 3]
