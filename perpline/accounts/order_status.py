"""Order status lifecycle as a transition table (Binance's statuses).

An illegal transition is a bug: `transition` raises IllegalTransition, the processor
logs and alarms it and applies nothing.
"""

from __future__ import annotations

NEW = "NEW"
PARTIALLY_FILLED = "PARTIALLY_FILLED"
FILLED = "FILLED"
CANCELED = "CANCELED"
REJECTED = "REJECTED"
EXPIRED = "EXPIRED"

TERMINAL = frozenset({FILLED, CANCELED, REJECTED, EXPIRED})
OPEN = frozenset({NEW, PARTIALLY_FILLED})  # on the book: may fill, be amended or cancelled
ENDED_UNFILLED = frozenset({CANCELED, REJECTED, EXPIRED})  # done without filling the rest (an execution type)

# (from status, event) -> to status
TRANSITIONS: dict[tuple[str, str], str] = {
    (NEW, "partial_fill"): PARTIALLY_FILLED,
    (NEW, "fill"): FILLED,
    (NEW, "cancel"): CANCELED,
    (NEW, "expire"): EXPIRED,
    (NEW, "reject"): REJECTED,
    (PARTIALLY_FILLED, "partial_fill"): PARTIALLY_FILLED,
    (PARTIALLY_FILLED, "fill"): FILLED,
    (PARTIALLY_FILLED, "cancel"): CANCELED,
    (PARTIALLY_FILLED, "expire"): EXPIRED,
}

DONE_EVENTS = {CANCELED: "cancel", EXPIRED: "expire", REJECTED: "reject"}


class IllegalTransition(Exception):
    pass


def transition(status: str, event: str) -> str:
    new = TRANSITIONS.get((status, event))
    if new is None:
        raise IllegalTransition(f"order status {status} cannot take event {event}")
    return new
