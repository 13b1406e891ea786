"""One account's state, owned by the accounts processor (single writer per account).

Stored in the processor's state store as MessagePack (one key per account), so it round-trips
exactly through the changelog; every number is an int. The idempotency memory (request outcomes,
closed orders' client ids, used nonces) is under keys of its own (perpline.accounts.memory), written
in the same transaction: this state keeps only its counters, so what a command writes stays small
however long an account trades.
"""

from __future__ import annotations

import msgspec


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
    unexecuted_lots: int = 0  # a reduce-only IOC/FOK/MARKET order's quantity beyond the position: never sent
    cut: bool = False  # a reduce-only order whose cancel was sent because the position shrank
    amend_pending: bool = False  # an amend is with the matcher; the next waits for its answer
    liquidation: bool = False  # placed by a liquidation: no fee; its fills settle with the insurance fund
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


class AccountState(msgspec.Struct, kw_only=True, omit_defaults=True):
    account_id: int
    balances: dict[str, Balance] = {}
    orders: dict[int, OrderState] = {}  # open orders only
    positions: dict[str, Position] = {}
    leverage: dict[str, int] = {}
    order_seq: int = 0
    journal_seq: int = 0  # the last account_seq given to one of this account's journals
    applied: dict[str, int] = {}  # symbol -> last applied matcher position (seq * 2 + leg)
    requests_remembered: int = 0  # request outcomes ever remembered (ring position, accounts.memory)
    client_ids_remembered: int = 0  # closed client order ids ever remembered (ring position)
    nonce_buckets: dict[int, int] = {}  # signed-time bucket -> how many used nonces it holds (accounts.memory)
    local: dict[str, bytes] = {}  # the memory's keys when no store is given (and the oldest format's rings)
    # Older formats, moved into the memory's own keys the first time their account is used:
    request_digests: bytes = b""  # 8-byte digest of each remembered request id, by ring slot
    client_id_digests: bytes = b""  # the same for closed client order ids
    nonce_digests: dict[bytes, int] = {}  # 8-byte digest of each used nonce -> signed_ms
    nonces: dict[str, int] = {}  # nonce -> signed_ms
    nonce_floor_ms: int = 0  # a signed command signed before this is refused: its nonce may be forgotten

    def balance(self, asset: str) -> Balance:
        found = self.balances.get(asset)
        if found is None:
            found = self.balances[asset] = Balance()
        return found


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AccountState)


def to_store(state: AccountState) -> bytes:
    return _encoder.encode(state)


def from_store(raw: bytes) -> AccountState:
    return _decoder.decode(raw)
