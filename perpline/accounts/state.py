"""One account's state, owned by the accounts processor (single writer per account).

Stored in the processor's state store as plain builtins (msgspec.to_builtins), so it
round-trips exactly through the changelog; every number is an int.
"""

from __future__ import annotations

import msgspec

MAX_REMEMBERED_REQUESTS = 4096  # idempotency window per account for API request ids
MAX_REMEMBERED_CLIENT_IDS = 4096  # client order ids remembered after their order closed


class Balance(msgspec.Struct, kw_only=True):
    available: int = 0
    order_margin: int = 0
    position_margin: int = 0
    version: int = 0

    @property
    def wallet(self) -> int:
        return self.available + self.order_margin + self.position_margin


class OrderState(msgspec.Struct, kw_only=True):
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    price_ticks: int
    qty_lots: int
    filled_lots: int = 0
    leaves_lots: int
    filled_value_tick_lots: int = 0  # sum of price_ticks * qty_lots over fills, for the average price
    status: str = "NEW"
    reduce_only: bool = False
    cut: bool = False  # a reduce-only order whose cancel was sent because the position shrank
    amend_pending: bool = False  # an amend is with the matcher; the next waits for its answer
    leverage: int
    margin_frozen: int
    fee_frozen: int
    created_ms: int
    updated_ms: int


class Position(msgspec.Struct, kw_only=True):
    symbol: str
    size_lots: int = 0  # signed: positive long, negative short
    cost: int = 0  # entry notional of the open size, amount units
    margin: int = 0  # isolated margin, amount units
    realized_pnl: int = 0
    leverage: int = 0
    version: int = 0


class RequestOutcome(msgspec.Struct, array_like=True):
    ok: bool
    code: int
    msg: str
    order_id: int | None
    client_order_id: str | None
    order_ids: list[int] = []


class AccountState(msgspec.Struct, kw_only=True):
    account_id: int
    balances: dict[str, Balance] = {}
    orders: dict[int, OrderState] = {}  # open orders only
    positions: dict[str, Position] = {}
    leverage: dict[str, int] = {}
    order_seq: int = 0
    journal_seq: int = 0  # the last account_seq given to one of this account's journals
    client_ids: dict[str, int] = {}  # client order id -> order id (open and recently closed)
    requests: dict[str, RequestOutcome] = {}  # insertion ordered; oldest evicted
    applied: dict[str, int] = {}  # symbol -> last applied matcher position (seq * 2 + leg)

    def balance(self, asset: str) -> Balance:
        found = self.balances.get(asset)
        if found is None:
            found = self.balances[asset] = Balance()
        return found

    def remember_request(self, request_id: str, outcome: RequestOutcome) -> None:
        self.requests[request_id] = outcome
        while len(self.requests) > MAX_REMEMBERED_REQUESTS:
            del self.requests[next(iter(self.requests))]

    def remember_client_id(self, client_order_id: str, order_id: int) -> None:
        self.client_ids[client_order_id] = order_id
        while len(self.client_ids) > MAX_REMEMBERED_CLIENT_IDS + len(self.orders):
            oldest = next(iter(self.client_ids))
            if self.client_ids[oldest] in self.orders:
                break  # never forget an open order's client id
            del self.client_ids[oldest]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AccountState)


def to_store(state: AccountState) -> str:
    """The state as a JSON string (the state store serialises values as JSON)."""
    return _encoder.encode(state).decode()


def from_store(text: str) -> AccountState:
    return _decoder.decode(text)
