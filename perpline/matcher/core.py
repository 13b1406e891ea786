"""Matching engine core: one price-time priority book per symbol, integers only.

Pure and deterministic: (state, input) -> events. Standard library only, so mypyc can
compile it (`python -m perpline.matcher.build`); the same source runs uncompiled.
Bad input never raises: it yields one EV_REJECTED event with a result code. Every
event, rejections included, carries `seq` = previous + 1 (gap-free per engine).

Semantics (Binance USD-M where it defines them):
- place: REJECTED (one event, nothing changes) or ACCEPTED, then TRADE* (and EXPIRED
  makers under STP), then RESTED (GTC/GTX limit with a remainder) or EXPIRED
  (IOC / MARKET / FOK remainder, or a remainder stopped by STP or the event budget).
  A fully filled order ends with its last TRADE (leaves_lots == 0): no extra event.
- LIMIT IOC trades what it can and expires the rest (code OK).
- FOK (limit or market) fills completely against the book at that instant or is
  ACCEPTED + EXPIRED (R_FOK_NOT_FILLABLE, or R_TOO_MANY_EVENTS if the fill needs more
  events than the budget), trading nothing and changing nothing else.
- GTX (post-only) that would cross the opposite best is REJECTED R_POST_ONLY_WOULD_TAKE.
  GTX_REPRICE (post-only, repriced) that would cross is moved one tick inside the opposite
  best (buy: best ask - 1, sell: best bid + 1) and rests there; ACCEPTED carries the new
  price. When that price is out of range (0 or above max_price_ticks) it is REJECTED
  R_POST_ONLY_WOULD_TAKE. Amended to a crossing price, both post-only kinds are rejected.
- MARKET ignores price_ticks, fills no further than market_protection_ppm from the
  best opposite price at arrival (buy bound rounded down, sell bound rounded up), the
  rest expires (code OK). GTC/IOC market behave alike; FOK market is all-or-nothing
  inside the bound; GTX market is R_BAD_INPUT; an empty opposite side is R_NO_LIQUIDITY.
- Self-trade prevention, decided by the TAKER's mode when taker and maker share an
  account (stp=STP_DEFAULT uses config.default_stp; STP_NONE lets them trade):
  EXPIRE_TAKER expires the taker's remainder (code R_SELF_TRADE) and leaves the maker;
  EXPIRE_MAKER expires that maker (R_SELF_TRADE) and the taker goes on matching;
  EXPIRE_BOTH expires the maker, then the taker's remainder.
- CANCELLED / EXPIRED events carry leaves_lots = the open quantity that was cancelled
  or expired (what to release); the order is gone afterwards.
- Order ids are consumed once an order passes the checks that do not depend on the book
  (shape, quantity, price, id): a later order with the same id is REJECTED
  R_DUPLICATE_ORDER_ID (live ids always; finished ids while they are among the last
  config.max_seen_ids consumed, oldest forgotten first). So an order rejected for the book's
  sake (post-only would take, no liquidity, book full, a live client_order_id) and then
  delivered again is a duplicate, not a second try that might rest or trade against an
  order the accounts processor already closed. An order refused by those first checks
  consumes no id (a copy gets the same answer).
  A client_order_id equal to one of the account's LIVE orders is R_BAD_INPUT.
- Every other input is idempotent by its own identity, `input_id` (the shell derives it from the
  command's kind, order id and cause; 0: none, applied every time): an input whose id is among the
  last config.max_seen_ids identities applied emits NOTHING and changes nothing, whatever its
  content. So a second copy of a cancel, or of an amend delivered again after a later amend of the
  same order, cannot move the order back through older terms. An input_id outside 1..2^63-1 is
  R_BAD_INPUT. The identity is consumed by the first copy whatever its outcome (a rejection too).
- amend: new qty <= filled is R_BAD_QTY. Same price and leaves not growing keeps time
  priority (one AMENDED). A price change or a leaves increase re-queues: AMENDED, then
  it matches as a taker like a GTC limit (TRADE*, RESTED or EXPIRED). A post-only (GTX)
  order amended to a crossing price is R_POST_ONLY_WOULD_TAKE.
- Limits: max_orders resting (R_BOOK_FULL), max_open_per_account (R_BOOK_FULL),
  max_levels per side (R_TOO_MANY_LEVELS), max_events_per_input per input (the
  taker's remainder expires with R_TOO_MANY_EVENTS), price and qty bounds.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from typing import Any, Final, final

from librt.vecs import append, pop, vec
from mypy_extensions import i64

SIDE_BUY: Final = 1
SIDE_SELL: Final = 2
TYPE_LIMIT: Final = 1
TYPE_MARKET: Final = 2
TIF_GTC: Final = 1
TIF_IOC: Final = 2
TIF_FOK: Final = 3
TIF_GTX: Final = 4
TIF_GTX_REPRICE: Final = 5
STP_DEFAULT: Final = -1
STP_NONE: Final = 0
STP_EXPIRE_TAKER: Final = 1
STP_EXPIRE_MAKER: Final = 2
STP_EXPIRE_BOTH: Final = 3

EV_ACCEPTED: Final = 1
EV_RESTED: Final = 2
EV_TRADE: Final = 3
EV_CANCELLED: Final = 4
EV_EXPIRED: Final = 5
EV_REJECTED: Final = 6
EV_AMENDED: Final = 7

CMD_PLACE: Final = 1
CMD_CANCEL: Final = 2
CMD_CANCEL_BY_CLIENT_ID: Final = 3
CMD_CANCEL_ALL: Final = 4
CMD_AMEND: Final = 5

OK: Final = 0
R_OK: Final = 0
R_UNKNOWN_ORDER: Final = 3001
R_DUPLICATE_ORDER_ID: Final = 3002
R_BAD_PRICE: Final = 3003
R_BAD_QTY: Final = 3004
R_POST_ONLY_WOULD_TAKE: Final = 3005
R_FOK_NOT_FILLABLE: Final = 3006
R_NO_LIQUIDITY: Final = 3007
R_BOOK_FULL: Final = 3008
R_TOO_MANY_LEVELS: Final = 3009
R_TOO_MANY_EVENTS: Final = 3010
R_NOT_OWNER: Final = 3011
R_BAD_INPUT: Final = 3012
R_SELF_TRADE: Final = 3013

SNAPSHOT_MAGIC: Final = b"PLMX"
SNAPSHOT_VERSION: Final = 3  # 3 added the remembered input ids; version 2 is still read (none remembered)
PPM: Final = 1_000_000
MAX_ID: Final = (1 << 63) - 1  # order, account ids and ts_ns fit a signed 64-bit integer
# The largest int mypyc keeps unboxed (tagged): comparing with it first keeps every id check off the
# big-integer path that comparing with MAX_ID alone takes.
_SHORT_MAX: Final = (1 << 62) - 1
_I64_MIN: Final = -(1 << 63)
MAX_CLIENT_ORDER_ID_CHARS: Final = 64

_SNAP_HEAD: Final = struct.Struct("<4sHI")
_U32: Final = struct.Struct("<I")
_POOL_MAX: Final = 4096  # freed Order / Level objects kept for reuse (no allocation per command)


@final
class RecentIds:
    """The last `cap` ids remembered (a set for lookups, a ring for their age; the oldest is
    forgotten first). Bounded: at most `cap` ids; cap 0 remembers nothing."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.ids: set[Any] = set()
        self.ring: list[Any] = []
        self.pos = 0  # when the ring is full: index of the oldest id

    def add(self, key: Any) -> None:
        cap = self.cap
        if cap == 0:
            return
        self.ids.add(key)
        ring = self.ring
        if len(ring) < cap:
            ring.append(key)
            return
        pos = self.pos
        self.ids.discard(ring[pos])
        ring[pos] = key
        self.pos = pos + 1 if pos + 1 < cap else 0

    def oldest_first(self) -> list[Any]:
        ring = self.ring
        return ring[self.pos:] + ring[:self.pos]

    def check(self) -> None:
        assert len(self.ids) == len(self.ring) <= self.cap


@final
class Event:
    """One output of the engine, one flat shape. For a TRADE: order_id, account_id, side,
    leaves_lots, filled_lots, client_order_id and reduce_only describe the TAKER, maker_*
    the maker, price_ticks is the maker's price and qty_lots the traded quantity."""

    def __init__(self, kind: int, seq: int, order_id: int, account_id: int, side: int, ts_ns: int) -> None:
        self.kind = kind
        self.seq = seq
        self.order_id = order_id
        self.account_id = account_id
        self.side = side
        self.ts_ns = ts_ns
        self.price_ticks = 0
        self.qty_lots = 0
        self.leaves_lots = 0
        self.filled_lots = 0
        self.maker_order_id = 0
        self.maker_account_id = 0
        self.maker_leaves_lots = 0
        self.maker_filled_lots = 0
        self.trade_id = 0
        self.code = 0
        self.client_order_id = ""
        self.reduce_only = False

    def as_tuple(self) -> tuple[int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int,
                                str, bool]:
        return (self.kind, self.seq, self.order_id, self.account_id, self.side, self.price_ticks, self.qty_lots,
                self.leaves_lots, self.filled_lots, self.maker_order_id, self.maker_account_id,
                self.maker_leaves_lots, self.maker_filled_lots, self.trade_id, self.code, self.ts_ns,
                self.client_order_id, self.reduce_only)

    def __repr__(self) -> str:
        return f"Event{self.as_tuple()}"


@final
class EngineConfig:
    def __init__(self, max_orders: int = 1_000_000, max_levels: int = 100_000, max_events_per_input: int = 10_000,
                 max_price_ticks: int = 10**12, max_qty_lots: int = 10**12, market_protection_ppm: int = 50_000,
                 default_stp: int = STP_EXPIRE_TAKER, max_seen_ids: int = 1_000_000,
                 max_open_per_account: int = 0) -> None:
        if max_open_per_account == 0:
            max_open_per_account = max_events_per_input
        assert 0 < max_orders <= 100_000_000 and 0 < max_levels <= 10_000_000
        assert 4 <= max_events_per_input <= 10_000_000
        assert 0 < max_price_ticks <= MAX_ID and 0 < max_qty_lots <= MAX_ID
        assert 0 < market_protection_ppm < PPM
        assert default_stp in (STP_NONE, STP_EXPIRE_TAKER, STP_EXPIRE_MAKER, STP_EXPIRE_BOTH)
        assert 0 <= max_seen_ids <= 100_000_000
        # cancel_all emits one event per open order: bounded by the per-input budget (0: equal to it).
        assert 0 < max_open_per_account <= max_events_per_input
        self.max_orders = max_orders
        self.max_levels = max_levels
        self.max_events_per_input = max_events_per_input
        self.max_price_ticks = max_price_ticks
        self.max_qty_lots = max_qty_lots
        self.market_protection_ppm = market_protection_ppm
        self.default_stp = default_stp
        self.max_seen_ids = max_seen_ids
        self.max_open_per_account = max_open_per_account

    def to_dict(self) -> dict[str, int]:
        return {"max_orders": self.max_orders, "max_levels": self.max_levels,
                "max_events_per_input": self.max_events_per_input, "max_price_ticks": self.max_price_ticks,
                "max_qty_lots": self.max_qty_lots, "market_protection_ppm": self.market_protection_ppm,
                "default_stp": self.default_stp, "max_seen_ids": self.max_seen_ids,
                "max_open_per_account": self.max_open_per_account}


def config_from_dict(doc: dict[str, int]) -> EngineConfig:
    return EngineConfig(int(doc["max_orders"]), int(doc["max_levels"]), int(doc["max_events_per_input"]),
                        int(doc["max_price_ticks"]), int(doc["max_qty_lots"]), int(doc["market_protection_ppm"]),
                        int(doc["default_stp"]), int(doc["max_seen_ids"]), int(doc["max_open_per_account"]))


@final
class OrderInfo:
    """A read-only copy of one resting order (what `order()` and `open_orders()` return)."""

    def __init__(self, order_id: int, account_id: int, side: int, tif: int, price_ticks: int, qty_lots: int,
                 leaves_lots: int, filled_lots: int, stp: int, reduce_only: bool, client_order_id: str,
                 ts_ns: int) -> None:
        self.order_id = order_id
        self.account_id = account_id
        self.side = side
        self.tif = tif
        self.price_ticks = price_ticks
        self.qty_lots = qty_lots
        self.leaves_lots = leaves_lots
        self.filled_lots = filled_lots
        self.stp = stp
        self.reduce_only = reduce_only
        self.client_order_id = client_order_id
        self.ts_ns = ts_ns

    def as_tuple(self) -> tuple[int, int, int, int, int, int, int, int, int, bool, str, int]:
        return (self.order_id, self.account_id, self.side, self.tif, self.price_ticks, self.qty_lots,
                self.leaves_lots, self.filled_lots, self.stp, self.reduce_only, self.client_order_id, self.ts_ns)

    def __repr__(self) -> str:
        return f"OrderInfo{self.as_tuple()}"


@final
class Command:
    """One decoded input for `Engine.execute` / `Engine.step` (the batch and per-call fast paths).

    kind is a CMD_* value; the fields a kind does not use are ignored. For CMD_AMEND,
    price_ticks and qty_lots are the new values. input_id is the identity of a non-place input
    (0: none; a place is identified by its order_id)."""

    def __init__(self, kind: int, order_id: int, account_id: int, side: int = 0, order_type: int = 0, tif: int = 0,
                 price_ticks: int = 0, qty_lots: int = 0, stp: int = STP_DEFAULT, reduce_only: bool = False,
                 client_order_id: str = "", ts_ns: int = 0, input_id: int = 0) -> None:
        self.kind = kind
        self.order_id = order_id
        self.account_id = account_id
        self.side = side
        self.order_type = order_type
        self.tif = tif
        self.price_ticks = price_ticks
        self.qty_lots = qty_lots
        self.stp = stp
        self.reduce_only = reduce_only
        self.client_order_id = client_order_id
        self.ts_ns = ts_ns
        self.input_id = input_id


@final
class Batch:
    """Commands in columns, one native 64-bit array per field (client order ids in a list), for
    `Engine.run`: the shell adds each decoded input with one compiled call (no object per command)
    and the engine applies the whole batch without leaving compiled code.

    A number that does not fit a signed 64-bit integer is stored as -1, which every field refuses
    with the code it would have got (ids and ts_ns: R_BAD_INPUT, price: R_BAD_PRICE, quantity:
    R_BAD_QTY); only the echo of such an id in the REJECTED event differs (-1)."""

    def __init__(self) -> None:
        self.count = 0
        self.kind: vec[i64] = vec[i64]()
        self.order_id: vec[i64] = vec[i64]()
        self.account_id: vec[i64] = vec[i64]()
        self.side: vec[i64] = vec[i64]()
        self.order_type: vec[i64] = vec[i64]()
        self.tif: vec[i64] = vec[i64]()
        self.price_ticks: vec[i64] = vec[i64]()
        self.qty_lots: vec[i64] = vec[i64]()
        self.stp: vec[i64] = vec[i64]()
        self.reduce_only: vec[i64] = vec[i64]()
        self.ts_ns: vec[i64] = vec[i64]()
        self.input_id: vec[i64] = vec[i64]()
        self.client_order_id: list[str] = []

    def _add(self, kind: int, order_id: int, account_id: int, side: int, order_type: int, tif: int,
             price_ticks: int, qty_lots: int, stp: int, reduce_only: bool, client_order_id: str, ts_ns: int,
             input_id: int) -> None:
        self.kind = append(self.kind, _fit(kind))
        self.order_id = append(self.order_id, _fit(order_id))
        self.account_id = append(self.account_id, _fit(account_id))
        self.side = append(self.side, _fit(side))
        self.order_type = append(self.order_type, _fit(order_type))
        self.tif = append(self.tif, _fit(tif))
        self.price_ticks = append(self.price_ticks, _fit(price_ticks))
        self.qty_lots = append(self.qty_lots, _fit(qty_lots))
        self.stp = append(self.stp, _fit(stp))
        self.reduce_only = append(self.reduce_only, 1 if reduce_only else 0)
        self.ts_ns = append(self.ts_ns, _fit(ts_ns))
        self.input_id = append(self.input_id, _fit(input_id))
        self.client_order_id.append(client_order_id)
        self.count += 1

    def place(self, order_id: int, account_id: int, side: int, order_type: int, tif: int, price_ticks: int,
              qty_lots: int, stp: int, reduce_only: bool, client_order_id: str, ts_ns: int) -> None:
        self._add(CMD_PLACE, order_id, account_id, side, order_type, tif, price_ticks, qty_lots, stp, reduce_only,
                  client_order_id, ts_ns, 0)

    def cancel(self, order_id: int, account_id: int, ts_ns: int, input_id: int) -> None:
        self._add(CMD_CANCEL, order_id, account_id, 0, 0, 0, 0, 0, 0, False, "", ts_ns, input_id)

    def cancel_by_client_id(self, account_id: int, client_order_id: str, ts_ns: int, input_id: int) -> None:
        self._add(CMD_CANCEL_BY_CLIENT_ID, 0, account_id, 0, 0, 0, 0, 0, 0, False, client_order_id, ts_ns, input_id)

    def cancel_all(self, account_id: int, ts_ns: int, input_id: int) -> None:
        self._add(CMD_CANCEL_ALL, 0, account_id, 0, 0, 0, 0, 0, 0, False, "", ts_ns, input_id)

    def amend(self, order_id: int, account_id: int, new_price_ticks: int, new_qty_lots: int, ts_ns: int,
              input_id: int) -> None:
        self._add(CMD_AMEND, order_id, account_id, 0, 0, 0, new_price_ticks, new_qty_lots, 0, False, "", ts_ns,
                  input_id)

    def add(self, c: Command) -> None:
        self._add(c.kind, c.order_id, c.account_id, c.side, c.order_type, c.tif, c.price_ticks, c.qty_lots, c.stp,
                  c.reduce_only, c.client_order_id, c.ts_ns, c.input_id)


def _fit(value: int) -> i64:
    """`value` as a native 64-bit integer, or -1 when it does not fit (see Batch)."""
    if -_SHORT_MAX <= value <= _SHORT_MAX:
        return value
    if value < _I64_MIN or value > MAX_ID:
        return -1
    return value


@final
class Order:
    """A live order. Resting orders are nodes of two intrusive doubly linked lists: their price
    level's FIFO (prev/next) and their account's open orders (acc_prev/acc_next). Objects are
    pooled by the engine and reused once the order is finished."""

    def __init__(self) -> None:
        self.order_id = 0
        self.key: Any = 0  # order_id boxed once: every dict and set operation reuses this object
        self.account_id = 0
        self.side = 0
        self.tif = 0
        self.price_ticks = 0  # 0 for a market order (it never rests)
        self.qty_lots = 0
        self.leaves_lots = 0
        self.filled_lots = 0
        self.stp = 0  # resolved: never STP_DEFAULT
        self.reduce_only = False
        self.client_order_id = ""
        self.ts_ns = 0
        self.prev: Order | None = None
        self.next: Order | None = None
        self.level: Level | None = None
        self.acc_prev: Order | None = None
        self.acc_next: Order | None = None
        self.account: AccountOrders | None = None

    def info(self) -> OrderInfo:
        return OrderInfo(self.order_id, self.account_id, self.side, self.tif, self.price_ticks, self.qty_lots,
                         self.leaves_lots, self.filled_lots, self.stp, self.reduce_only, self.client_order_id,
                         self.ts_ns)


@final
class Level:
    """A FIFO of orders at one price: a doubly linked list, O(1) append and removal."""

    def __init__(self) -> None:
        self.price_ticks = 0
        self.head: Order | None = None
        self.tail: Order | None = None
        self.total_lots = 0
        self.count = 0

    def append(self, order: Order) -> None:
        assert order.level is None and order.leaves_lots > 0
        order.level = self
        order.prev = self.tail
        order.next = None
        tail = self.tail
        if tail is None:
            self.head = order
        else:
            tail.next = order
        self.tail = order
        self.total_lots += order.leaves_lots
        self.count += 1

    def remove(self, order: Order) -> None:
        assert order.level is self
        prev = order.prev
        nxt = order.next
        if prev is None:
            self.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            self.tail = prev
        else:
            nxt.prev = prev
        self.total_lots -= order.leaves_lots
        self.count -= 1
        assert self.total_lots >= 0 and self.count >= 0
        order.prev = None
        order.next = None
        order.level = None


@final
class AccountOrders:
    """One account's resting orders in this book: an intrusive list through Order.acc_prev/acc_next."""

    def __init__(self, account_id: int, key: Any) -> None:
        self.account_id = account_id
        self.key: Any = key  # account_id boxed once
        self.head: Order | None = None
        self.count = 0

    def link(self, order: Order) -> None:
        order.account = self
        order.acc_prev = None
        order.acc_next = self.head
        if self.head is not None:
            self.head.acc_prev = order
        self.head = order
        self.count += 1

    def unlink(self, order: Order) -> None:
        assert order.account is self
        if order.acc_prev is None:
            self.head = order.acc_next
        else:
            order.acc_prev.acc_next = order.acc_next
        if order.acc_next is not None:
            order.acc_next.acc_prev = order.acc_prev
        order.acc_prev = None
        order.acc_next = None
        order.account = None
        self.count -= 1
        assert self.count >= 0

    def order_ids(self) -> list[int]:
        out: list[int] = []
        order = self.head
        while order is not None:
            out.append(order.order_id)
            order = order.acc_next
        out.sort()
        return out


@final
class BookSide:
    """One side's levels, sorted so that the BEST level is always the LAST element: `keys` holds
    the price for bids and minus the price for asks, ascending, as native 64-bit integers (a
    `vec[i64]`: no boxed int per comparison); `levels` is parallel to it. Matching pops from the
    end; a new level is inserted by binary search (a few dozen levels, mostly near the end). No
    dict: a lookup by price is a bisect over native integers."""

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.keys: vec[i64] = vec[i64]()
        self.levels: list[Level] = []

    def key(self, price_ticks: int) -> i64:
        return price_ticks if self.is_bid else -price_ticks

    def index(self, key: i64) -> i64:
        """The first index whose key is >= `key` (bisect_left)."""
        keys = self.keys
        lo: i64 = 0
        hi: i64 = len(keys)
        if hi > 0 and keys[hi - 1] < key:
            return hi
        while lo < hi:
            mid = (lo + hi) >> 1
            if keys[mid] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def find(self, price_ticks: int) -> Level | None:
        key = self.key(price_ticks)
        i = self.index(key)
        if i < len(self.keys) and self.keys[i] == key:
            return self.levels[i]
        return None

    def best(self) -> Level | None:
        levels = self.levels
        return levels[len(levels) - 1] if levels else None

    def insert(self, level: Level) -> None:
        key = self.key(level.price_ticks)
        i = self.index(key)
        keys = self.keys
        n = len(keys)
        assert i == n or keys[i] != key
        keys = append(keys, key)
        j = n
        while j > i:  # shift the worse keys up by one (new levels are mostly near the best end)
            keys[j] = keys[j - 1]
            j -= 1
        keys[i] = key
        self.keys = keys
        if i == n:
            self.levels.append(level)
        else:
            self.levels.insert(i, level)

    def drop(self, level: Level) -> None:
        last = len(self.levels) - 1
        if last >= 0 and self.levels[last] is level:
            self.keys, _ = pop(self.keys)
            self.levels.pop()
            return
        i = self.index(self.key(level.price_ticks))
        assert self.levels[i] is level
        keys = self.keys
        j = i
        while j < last:
            keys[j] = keys[j + 1]
            j += 1
        self.keys, _ = pop(keys)
        del self.levels[i]

    def count(self) -> int:
        return len(self.levels)

    def best_first(self, limit: int) -> list[Level]:
        count = min(max(limit, 0), len(self.levels))
        out: list[Level] = []
        i = len(self.levels) - 1
        while len(out) < count:
            out.append(self.levels[i])
            i -= 1
        return out


def _crosses(taker_side: int, limit_ticks: int, maker_price_ticks: int) -> bool:
    if taker_side == SIDE_BUY:
        return maker_price_ticks <= limit_ticks
    return maker_price_ticks >= limit_ticks


def _valid_id(value: int) -> bool:
    return 0 < value and (value <= _SHORT_MAX or value <= MAX_ID)


def _valid_ts(ts_ns: int) -> bool:
    return 0 <= ts_ns and (ts_ns <= _SHORT_MAX or ts_ns <= MAX_ID)


def _rests(order_type: int, tif: int) -> bool:
    return order_type == TYPE_LIMIT and (tif == TIF_GTC or tif == TIF_GTX or tif == TIF_GTX_REPRICE)


def _post_only(tif: int) -> bool:
    return tif == TIF_GTX or tif == TIF_GTX_REPRICE


@final
class Engine:
    """The book of one symbol. Public calls returning list[Event] hand over fresh Event objects;
    `step` and `execute` are the fast paths: their events live in the engine's reusable buffer
    (`events()` / the returned list) and are overwritten by the next call."""

    def __init__(self, symbol: str, config: EngineConfig) -> None:
        self.symbol = symbol
        self.config = config
        self.max_events = config.max_events_per_input
        self.bids = BookSide(True)
        self.asks = BookSide(False)
        # Keys are boxed once per order / account (Order.key, AccountOrders.key): mypyc would box
        # a native int again for every lookup otherwise.
        self.orders: dict[Any, Order] = {}
        self.by_account: dict[Any, AccountOrders] = {}
        self.by_client: dict[tuple[int, str], Order] = {}
        self.seen = RecentIds(config.max_seen_ids)  # order ids consumed by places
        # No id above this was ever consumed (live or remembered): a new order id above it needs no
        # lookup to be known fresh. Order ids grow per account, so that is the common case.
        self.max_consumed_id = 0
        self.applied = RecentIds(config.max_seen_ids)  # input_ids of the other inputs applied
        self.seq = 0  # last seq emitted
        self.trade_seq = 0  # last trade_id emitted
        self._buf: list[Event] = []  # event objects, reused across calls on the fast paths
        self._n = 0  # events emitted by the current call
        self._base = 0  # index in _buf of the current input's first event
        self._free_orders: list[Order] = []
        self._free_levels: list[Level] = []
        self.ends: vec[i64] = vec[i64]()  # after `execute` / `run`: where each input's events end

    # --- events ------------------------------------------------------------------------------
    def _emit(self, kind: int, order_id: int, account_id: int, side: int, ts_ns: int, price_ticks: int,
              qty_lots: int, leaves_lots: int, filled_lots: int, code: int, client_order_id: str,
              reduce_only: bool) -> Event:
        self.seq += 1
        n = self._n
        if n < len(self._buf):
            event = self._buf[n]
            event.kind = kind
            event.seq = self.seq
            event.order_id = order_id
            event.account_id = account_id
            event.side = side
            event.ts_ns = ts_ns
        else:
            event = Event(kind, self.seq, order_id, account_id, side, ts_ns)
            self._buf.append(event)
        self._n = n + 1
        event.price_ticks = price_ticks
        event.qty_lots = qty_lots
        event.leaves_lots = leaves_lots
        event.filled_lots = filled_lots
        event.maker_order_id = 0
        event.maker_account_id = 0
        event.maker_leaves_lots = 0
        event.maker_filled_lots = 0
        event.trade_id = 0
        event.code = code
        event.client_order_id = client_order_id
        event.reduce_only = reduce_only
        return event

    def _order_event(self, kind: int, order: Order, ts_ns: int, code: int) -> None:
        self._emit(kind, order.order_id, order.account_id, order.side, ts_ns, order.price_ticks, order.qty_lots,
                   order.leaves_lots, order.filled_lots, code, order.client_order_id, order.reduce_only)

    def _reject(self, order_id: int, account_id: int, side: int, code: int, ts_ns: int, client_order_id: str) -> None:
        assert self._n == self._base and code != OK
        self._emit(EV_REJECTED, order_id, account_id, side, ts_ns, 0, 0, 0, 0, code, client_order_id, False)

    def _begin(self) -> None:
        self._n = 0
        self._base = 0

    def _take(self) -> list[Event]:
        """Hand the current call's events over to the caller (fresh objects next time)."""
        n = self._n
        assert n <= self.max_events
        out = self._buf[:n]
        del self._buf[:n]
        self._n = 0
        return out

    def events(self) -> list[Event]:
        """The events of the last `step` (engine-owned; overwritten by the next call)."""
        return self._buf[:self._n]

    def _side(self, side: int) -> BookSide:
        return self.bids if side == SIDE_BUY else self.asks

    def _opposite(self, side: int) -> BookSide:
        return self.asks if side == SIDE_BUY else self.bids

    # --- pools ---------------------------------------------------------------------------------
    def _new_order(self, order_id: int, account_id: int, side: int, tif: int, price_ticks: int, qty_lots: int,
                   stp: int, reduce_only: bool, client_order_id: str, ts_ns: int, key: Any) -> Order:
        order = self._free_orders.pop() if self._free_orders else Order()
        order.order_id = order_id
        order.key = key
        order.account_id = account_id
        order.side = side
        order.tif = tif
        order.price_ticks = price_ticks
        order.qty_lots = qty_lots
        order.leaves_lots = qty_lots
        order.filled_lots = 0
        order.stp = stp
        order.reduce_only = reduce_only
        order.client_order_id = client_order_id
        order.ts_ns = ts_ns
        return order

    def _recycle(self, order: Order) -> None:
        assert order.level is None and order.account is None
        if len(self._free_orders) < _POOL_MAX:
            order.client_order_id = ""
            self._free_orders.append(order)

    def _level_for(self, book: BookSide, price_ticks: int) -> Level:
        level = book.find(price_ticks)
        if level is not None:
            return level
        level = self._free_levels.pop() if self._free_levels else Level()
        level.price_ticks = price_ticks
        book.insert(level)
        return level

    def _drop_level(self, book: BookSide, level: Level) -> None:
        book.drop(level)
        assert level.head is None and level.total_lots == 0
        if len(self._free_levels) < _POOL_MAX:
            self._free_levels.append(level)

    # --- queries -------------------------------------------------------------------------------
    def best_bid(self) -> int:
        level = self.bids.best()
        return 0 if level is None else level.price_ticks

    def best_ask(self) -> int:
        level = self.asks.best()
        return 0 if level is None else level.price_ticks

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids best first, asks best first) as (price_ticks, total qty_lots), at most `levels` each."""
        bids = [(lv.price_ticks, lv.total_lots) for lv in self.bids.best_first(levels)]
        asks = [(lv.price_ticks, lv.total_lots) for lv in self.asks.best_first(levels)]
        return bids, asks

    def order(self, order_id: int) -> OrderInfo | None:
        order = self.orders.get(order_id)
        return None if order is None else order.info()

    def open_orders(self, account_id: int) -> list[OrderInfo]:
        """The account's resting orders, ascending order_id."""
        mine = self.by_account.get(account_id)
        if mine is None:
            return []
        return [self.orders[oid].info() for oid in mine.order_ids()]

    def order_leaves(self, order_id: int) -> int:
        order = self.orders.get(order_id)
        return 0 if order is None else order.leaves_lots

    def order_count(self) -> int:
        return len(self.orders)

    def level_counts(self) -> tuple[int, int]:
        """(bid levels, ask levels)."""
        return self.bids.count(), self.asks.count()

    # --- fast paths ------------------------------------------------------------------------------
    def step(self, cmd: Command) -> int:
        """Apply one command; returns how many events it emitted (read them with `events()`)."""
        self._begin()
        self._dispatch(cmd)
        return self._n

    def execute(self, cmds: list[Command]) -> list[Event]:
        """Apply a batch in order; returns every event of the batch, in order, and sets `ends[i]` to
        the end of input i's events in that list. The Event objects belong to the engine and are
        reused by its next call: convert them before calling again."""
        self._begin()
        ends = vec[i64](capacity=len(cmds))
        for cmd in cmds:
            self._base = self._n
            self._dispatch(cmd)
            assert self._n - self._base <= self.max_events
            ends = append(ends, self._n)
        self.ends = ends
        return self._buf[:self._n]

    def run(self, batch: Batch) -> int:
        """Apply a whole Batch in order without leaving compiled code; returns how many events it
        emitted. Read them with `events()` (engine-owned, overwritten by the next call); `ends[i]`
        is where input i's events end."""
        self._begin()
        ends = vec[i64](capacity=batch.count)
        kind = batch.kind
        order_id = batch.order_id
        account_id = batch.account_id
        side = batch.side
        order_type = batch.order_type
        tif = batch.tif
        price_ticks = batch.price_ticks
        qty_lots = batch.qty_lots
        stp = batch.stp
        reduce_only = batch.reduce_only
        ts_ns = batch.ts_ns
        input_id = batch.input_id
        coids = batch.client_order_id
        for i in range(batch.count):
            self._base = self._n
            self._dispatch_fields(kind[i], order_id[i], account_id[i], side[i], order_type[i], tif[i], price_ticks[i],
                                  qty_lots[i], stp[i], reduce_only[i] != 0, coids[i], ts_ns[i], input_id[i])
            assert self._n - self._base <= self.max_events
            ends = append(ends, self._n)
        self.ends = ends
        return self._n

    def _dispatch(self, c: Command) -> None:
        self._dispatch_fields(c.kind, c.order_id, c.account_id, c.side, c.order_type, c.tif, c.price_ticks,
                              c.qty_lots, c.stp, c.reduce_only, c.client_order_id, c.ts_ns, c.input_id)

    def _dispatch_fields(self, kind: int, order_id: int, account_id: int, side: int, order_type: int, tif: int,
                         price_ticks: int, qty_lots: int, stp: int, reduce_only: bool, client_order_id: str,
                         ts_ns: int, input_id: int) -> None:
        if kind == CMD_PLACE:
            self._place(order_id, account_id, side, order_type, tif, price_ticks, qty_lots, stp, reduce_only,
                        client_order_id, ts_ns)
        elif input_id != 0 and not self._first_time(order_id, account_id, input_id, ts_ns):
            return
        elif kind == CMD_CANCEL:
            self._cancel(order_id, account_id, ts_ns)
        elif kind == CMD_CANCEL_BY_CLIENT_ID:
            self._cancel_by_client_id(account_id, client_order_id, ts_ns)
        elif kind == CMD_CANCEL_ALL:
            self._cancel_all(account_id, ts_ns)
        elif kind == CMD_AMEND:
            self._amend(order_id, account_id, price_ticks, qty_lots, ts_ns)
        else:
            self._reject(order_id, account_id, 0, R_BAD_INPUT, max(0, min(ts_ns, MAX_ID)), "")

    # --- place ---------------------------------------------------------------------------------
    def _validate_shape(self, order_id: int, account_id: int, side: int, order_type: int, tif: int, stp: int,
                        client_order_id: str, ts_ns: int) -> int:
        if not _valid_id(order_id) or not _valid_id(account_id) or not _valid_ts(ts_ns):
            return R_BAD_INPUT
        if side != SIDE_BUY and side != SIDE_SELL:
            return R_BAD_INPUT
        if order_type != TYPE_LIMIT and order_type != TYPE_MARKET:
            return R_BAD_INPUT
        if tif < TIF_GTC or tif > TIF_GTX_REPRICE or stp < STP_DEFAULT or stp > STP_EXPIRE_BOTH:
            return R_BAD_INPUT
        if order_type == TYPE_MARKET and _post_only(tif):
            return R_BAD_INPUT
        if len(client_order_id) > MAX_CLIENT_ORDER_ID_CHARS:
            return R_BAD_INPUT
        return OK

    def _validate(self, order_id: int, account_id: int, side: int, order_type: int, tif: int, price_ticks: int,
                  qty_lots: int, stp: int, client_order_id: str, ts_ns: int, key: Any) -> int:
        code = self._validate_shape(order_id, account_id, side, order_type, tif, stp, client_order_id, ts_ns)
        if code != OK:
            return code
        if qty_lots <= 0 or qty_lots > self.config.max_qty_lots:
            return R_BAD_QTY
        if order_type == TYPE_LIMIT and (price_ticks <= 0 or price_ticks > self.config.max_price_ticks):
            return R_BAD_PRICE
        if order_id <= self.max_consumed_id and (key in self.orders or key in self.seen.ids):
            return R_DUPLICATE_ORDER_ID
        return OK

    def _room_to_rest(self, mine: AccountOrders | None, side: int, price_ticks: int) -> int:
        if len(self.orders) >= self.config.max_orders:
            return R_BOOK_FULL
        if mine is not None and mine.count >= self.config.max_open_per_account:
            return R_BOOK_FULL
        book = self._side(side)
        if book.count() >= self.config.max_levels and book.find(price_ticks) is None:
            return R_TOO_MANY_LEVELS
        return OK

    def _repriced(self, side: int, price_ticks: int) -> int:
        """Where a GTX_REPRICE order rests: its price, or one tick inside the opposite best when it
        would take; 0 when that tick is out of range."""
        best = self._opposite(side).best()
        if best is None or not _crosses(side, price_ticks, best.price_ticks):
            return price_ticks
        moved = best.price_ticks - 1 if side == SIDE_BUY else best.price_ticks + 1
        return moved if 0 < moved <= self.config.max_price_ticks else 0

    def place(self, order_id: int, account_id: int, side: int, order_type: int, tif: int, price_ticks: int,
              qty_lots: int, stp: int, reduce_only: bool, client_order_id: str, ts_ns: int) -> list[Event]:
        self._begin()
        self._place(order_id, account_id, side, order_type, tif, price_ticks, qty_lots, stp, reduce_only,
                    client_order_id, ts_ns)
        return self._take()

    def _place(self, order_id: int, account_id: int, side: int, order_type: int, tif: int, price_ticks: int,
               qty_lots: int, stp: int, reduce_only: bool, client_order_id: str, ts_ns: int) -> None:
        key: Any = order_id
        code = self._validate(order_id, account_id, side, order_type, tif, price_ticks, qty_lots, stp,
                              client_order_id, ts_ns, key)
        if code != OK:
            self._reject(order_id, account_id, side, code, ts_ns, client_order_id)
            return
        self.seen.add(key)  # from here on every answer depends on the book: a resent copy must not get another
        if order_id > self.max_consumed_id:
            self.max_consumed_id = order_id
        if client_order_id and (account_id, client_order_id) in self.by_client:
            self._reject(order_id, account_id, side, R_BAD_INPUT, ts_ns, client_order_id)
            return
        if tif == TIF_GTX_REPRICE:
            price_ticks = self._repriced(side, price_ticks)
            if price_ticks == 0:
                self._reject(order_id, account_id, side, R_POST_ONLY_WOULD_TAKE, ts_ns, client_order_id)
                return
        rests = _rests(order_type, tif)
        if rests:
            code = self._room_to_rest(self.by_account.get(account_id), side, price_ticks)
            if code != OK:
                self._reject(order_id, account_id, side, code, ts_ns, client_order_id)
                return
        limit_ticks = price_ticks
        if order_type == TYPE_MARKET:
            limit_ticks = self._market_bound(side)
            if limit_ticks <= 0:
                self._reject(order_id, account_id, side, R_NO_LIQUIDITY, ts_ns, client_order_id)
                return
        elif tif == TIF_GTX and self._would_take(side, price_ticks):
            self._reject(order_id, account_id, side, R_POST_ONLY_WOULD_TAKE, ts_ns, client_order_id)
            return
        order = self._new_order(order_id, account_id, side, tif, price_ticks if order_type == TYPE_LIMIT else 0,
                                qty_lots, self.config.default_stp if stp == STP_DEFAULT else stp, reduce_only,
                                client_order_id, ts_ns, key)
        self._order_event(EV_ACCEPTED, order, ts_ns, OK)
        if tif == TIF_FOK:
            code = self._fok_check(order, limit_ticks)
            if code != OK:
                self._order_event(EV_EXPIRED, order, ts_ns, code)
                self._recycle(order)
                return
        code = self._match(order, limit_ticks, ts_ns)
        if order.leaves_lots > 0 and rests and code == OK:
            self._rest(order, ts_ns)
            return
        assert tif != TIF_FOK or order.leaves_lots == 0, "FOK passed its check but did not fill"
        if order.leaves_lots > 0:
            self._order_event(EV_EXPIRED, order, ts_ns, code)
        self._recycle(order)

    def _first_time(self, order_id: int, account_id: int, input_id: int, ts_ns: int) -> bool:
        """True the first time an input identity is seen (it is remembered from now on); False for a copy,
        which must emit nothing. An identity out of range is rejected (and not remembered)."""
        if not _valid_id(input_id):
            self._reject(order_id, account_id, 0, R_BAD_INPUT, max(0, min(ts_ns, MAX_ID)), "")
            return False
        key: Any = input_id
        if key in self.applied.ids:
            return False
        self.applied.add(key)
        return True

    def _rest(self, order: Order, ts_ns: int) -> None:
        """Put a non-crossing remainder on the book and index it."""
        assert order.leaves_lots > 0 and order.price_ticks > 0
        assert not self._would_take(order.side, order.price_ticks), "resting would cross the book"
        self._level_for(self._side(order.side), order.price_ticks).append(order)
        self._index(order)
        self._order_event(EV_RESTED, order, ts_ns, OK)

    def _index(self, order: Order) -> None:
        self.orders[order.key] = order
        mine = self.by_account.get(order.account_id)
        if mine is None:
            mine = AccountOrders(order.account_id, order.account_id)
            self.by_account[mine.key] = mine
        mine.link(order)
        if order.client_order_id:
            self.by_client[(order.account_id, order.client_order_id)] = order

    def _unindex(self, order: Order) -> None:
        del self.orders[order.key]
        mine = order.account
        assert mine is not None
        mine.unlink(order)
        if mine.count == 0:
            del self.by_account[mine.key]
        if order.client_order_id:
            del self.by_client[(order.account_id, order.client_order_id)]

    def _market_bound(self, side: int) -> int:
        """The worst price a market order may reach, or 0 when the opposite side is empty."""
        best = self._opposite(side).best()
        if best is None:
            return 0
        ppm = self.config.market_protection_ppm
        if side == SIDE_BUY:
            return best.price_ticks * (PPM + ppm) // PPM
        return max(1, -((-best.price_ticks * (PPM - ppm)) // PPM))

    def _would_take(self, side: int, limit_ticks: int) -> bool:
        best = self._opposite(side).best()
        return best is not None and _crosses(side, limit_ticks, best.price_ticks)

    def _fok_check(self, taker: Order, limit_ticks: int) -> int:
        """OK if matching now fills the taker completely within the event budget, else why not.

        Walks the makers the taker would meet, as `_match` would: a same-account maker stops
        the walk under EXPIRE_TAKER/EXPIRE_BOTH and is skipped (expired) under EXPIRE_MAKER."""
        book = self._opposite(taker.side)
        total_lots = 0
        makers = 0
        budget = self.max_events - 2  # ACCEPTED, then one event per maker met
        i = len(book.levels) - 1
        while i >= 0:
            level = book.levels[i]
            i -= 1
            if not _crosses(taker.side, limit_ticks, level.price_ticks):
                break
            maker = level.head
            while maker is not None:
                makers += 1
                if makers > budget:
                    return R_TOO_MANY_EVENTS
                if maker.account_id == taker.account_id and taker.stp != STP_NONE:
                    if taker.stp != STP_EXPIRE_MAKER:
                        return R_FOK_NOT_FILLABLE
                else:
                    total_lots += maker.leaves_lots
                    if total_lots >= taker.leaves_lots:
                        return OK
                maker = maker.next
        return R_FOK_NOT_FILLABLE

    # --- matching --------------------------------------------------------------------------------
    def _match(self, taker: Order, limit_ticks: int, ts_ns: int) -> int:
        """Trade the taker against the opposite side; returns OK or why its remainder must expire."""
        book = self._opposite(taker.side)
        levels = book.levels
        is_buy = taker.side == SIDE_BUY
        stop_at = self._base + self.max_events - 1  # room for this step's event and a final one
        while taker.leaves_lots > 0:
            top = len(levels) - 1
            if top < 0:
                return OK
            level = levels[top]
            if (level.price_ticks > limit_ticks) if is_buy else (level.price_ticks < limit_ticks):
                return OK
            if self._n >= stop_at:
                return R_TOO_MANY_EVENTS
            maker = level.head
            assert maker is not None
            if maker.account_id == taker.account_id and taker.stp != STP_NONE:
                if taker.stp != STP_EXPIRE_TAKER:
                    self._remove(maker)
                    self._order_event(EV_EXPIRED, maker, ts_ns, R_SELF_TRADE)
                    self._recycle(maker)
                if taker.stp != STP_EXPIRE_MAKER:
                    return R_SELF_TRADE
                continue
            self._trade(taker, maker, level, ts_ns)
        return OK

    def _trade(self, taker: Order, maker: Order, level: Level, ts_ns: int) -> None:
        qty_lots = taker.leaves_lots if taker.leaves_lots < maker.leaves_lots else maker.leaves_lots
        assert qty_lots > 0 and maker.level is level
        taker.leaves_lots -= qty_lots
        taker.filled_lots += qty_lots
        maker.leaves_lots -= qty_lots
        maker.filled_lots += qty_lots
        level.total_lots -= qty_lots
        self.trade_seq += 1
        event = self._emit(EV_TRADE, taker.order_id, taker.account_id, taker.side, ts_ns, maker.price_ticks, qty_lots,
                           taker.leaves_lots, taker.filled_lots, OK, taker.client_order_id, taker.reduce_only)
        event.maker_order_id = maker.order_id
        event.maker_account_id = maker.account_id
        event.maker_leaves_lots = maker.leaves_lots
        event.maker_filled_lots = maker.filled_lots
        event.trade_id = self.trade_seq
        if maker.leaves_lots == 0:
            self._remove(maker)
            self._recycle(maker)

    def _unlink_from_level(self, order: Order) -> None:
        level = order.level
        assert level is not None, "order not in the book"
        level.remove(order)
        if level.count == 0:
            self._drop_level(self._side(order.side), level)

    def _remove(self, order: Order) -> None:
        """Take a resting order off the book and out of every index (the caller recycles it)."""
        self._unlink_from_level(order)
        self._unindex(order)

    # --- cancel and amend --------------------------------------------------------------------------
    def cancel(self, order_id: int, account_id: int, ts_ns: int, input_id: int = 0) -> list[Event]:
        self._begin()
        if input_id == 0 or self._first_time(order_id, account_id, input_id, ts_ns):
            self._cancel(order_id, account_id, ts_ns)
        return self._take()

    def _cancel(self, order_id: int, account_id: int, ts_ns: int) -> None:
        order = self.orders.get(order_id)
        if order is None:
            self._reject(order_id, account_id, 0, R_UNKNOWN_ORDER, ts_ns, "")
        elif order.account_id != account_id:
            self._reject(order_id, account_id, 0, R_NOT_OWNER, ts_ns, "")
        else:
            self._remove(order)
            self._order_event(EV_CANCELLED, order, ts_ns, OK)
            self._recycle(order)

    def cancel_by_client_id(self, account_id: int, client_order_id: str, ts_ns: int,
                            input_id: int = 0) -> list[Event]:
        self._begin()
        if input_id == 0 or self._first_time(0, account_id, input_id, ts_ns):
            self._cancel_by_client_id(account_id, client_order_id, ts_ns)
        return self._take()

    def _cancel_by_client_id(self, account_id: int, client_order_id: str, ts_ns: int) -> None:
        order = self.by_client.get((account_id, client_order_id)) if client_order_id else None
        if order is None:
            self._reject(0, account_id, 0, R_UNKNOWN_ORDER, ts_ns, client_order_id)
        else:
            self._cancel(order.order_id, account_id, ts_ns)

    def cancel_all(self, account_id: int, ts_ns: int, input_id: int = 0) -> list[Event]:
        """One CANCELLED per resting order of the account, ascending order_id; none -> no events."""
        self._begin()
        if input_id == 0 or self._first_time(0, account_id, input_id, ts_ns):
            self._cancel_all(account_id, ts_ns)
        return self._take()

    def _cancel_all(self, account_id: int, ts_ns: int) -> None:
        mine = self.by_account.get(account_id)
        if mine is None:
            return
        for order_id in mine.order_ids():
            self._cancel(order_id, account_id, ts_ns)
        assert account_id not in self.by_account

    def amend(self, order_id: int, account_id: int, new_price_ticks: int, new_qty_lots: int,
              ts_ns: int, input_id: int = 0) -> list[Event]:
        self._begin()
        if input_id == 0 or self._first_time(order_id, account_id, input_id, ts_ns):
            self._amend(order_id, account_id, new_price_ticks, new_qty_lots, ts_ns)
        return self._take()

    def _amend(self, order_id: int, account_id: int, new_price_ticks: int, new_qty_lots: int, ts_ns: int) -> None:
        order = self.orders.get(order_id)
        if order is None:
            self._reject(order_id, account_id, 0, R_UNKNOWN_ORDER, ts_ns, "")
            return
        if order.account_id != account_id:
            self._reject(order_id, account_id, 0, R_NOT_OWNER, ts_ns, "")
            return
        code = self._amend_code(order, new_price_ticks, new_qty_lots, ts_ns)
        if code != OK:
            self._reject(order_id, account_id, order.side, code, ts_ns, order.client_order_id)
            return
        new_leaves = new_qty_lots - order.filled_lots
        if new_price_ticks == order.price_ticks and new_leaves <= order.leaves_lots:
            level = order.level
            assert level is not None
            level.total_lots -= order.leaves_lots - new_leaves
            order.leaves_lots = new_leaves
            order.qty_lots = new_qty_lots
            self._order_event(EV_AMENDED, order, ts_ns, OK)
            return
        self._unlink_from_level(order)
        order.price_ticks = new_price_ticks
        order.qty_lots = new_qty_lots
        order.leaves_lots = new_leaves
        self._order_event(EV_AMENDED, order, ts_ns, OK)
        code = self._match(order, new_price_ticks, ts_ns)
        if order.leaves_lots > 0 and code == OK:
            self._level_for(self._side(order.side), order.price_ticks).append(order)
            self._order_event(EV_RESTED, order, ts_ns, OK)
            return
        if order.leaves_lots > 0:
            self._order_event(EV_EXPIRED, order, ts_ns, code)
        self._unindex(order)
        self._recycle(order)

    def _amend_code(self, order: Order, new_price_ticks: int, new_qty_lots: int, ts_ns: int) -> int:
        if not _valid_ts(ts_ns):
            return R_BAD_INPUT
        if new_qty_lots <= order.filled_lots or new_qty_lots > self.config.max_qty_lots:
            return R_BAD_QTY
        if new_price_ticks <= 0 or new_price_ticks > self.config.max_price_ticks:
            return R_BAD_PRICE
        if new_price_ticks == order.price_ticks:
            return OK
        if _post_only(order.tif) and self._would_take(order.side, new_price_ticks):
            return R_POST_ONLY_WOULD_TAKE
        book = self._side(order.side)
        level = order.level
        assert level is not None
        levels_after_leaving = book.count() - (1 if level.count == 1 else 0)
        if levels_after_leaving >= self.config.max_levels and book.find(new_price_ticks) is None:
            return R_TOO_MANY_LEVELS
        return OK

    # --- invariants --------------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Assert the whole book is consistent (O(orders)); tests call it after every step."""
        best_bid = self.best_bid()
        best_ask = self.best_ask()
        assert best_bid == 0 or best_ask == 0 or best_bid < best_ask, "book crossed"
        count = 0
        for book in (self.bids, self.asks):
            keys = [int(k) for k in book.keys]
            assert keys == sorted(set(keys)) and len(keys) == len(book.levels)
            assert book.count() <= self.config.max_levels
            for key, level in zip(keys, book.levels, strict=True):
                assert book.key(level.price_ticks) == key
                count += self._check_level(book, level)
        assert count == len(self.orders) <= self.config.max_orders
        assert sum(mine.count for mine in self.by_account.values()) == count
        for account_id, mine in self.by_account.items():
            assert mine.count > 0 and len(mine.order_ids()) == mine.count and mine.account_id == account_id
        assert all(self.orders.get(o.order_id) is o for o in self.by_client.values())
        assert len(self.by_client) == sum(1 for o in self.orders.values() if o.client_order_id)
        self.seen.check()
        assert all(k <= self.max_consumed_id for k in self.orders) and all(
            k <= self.max_consumed_id for k in self.seen.ids), "an id above max_consumed_id was consumed"
        self.applied.check()
        assert all(order.level is None and order.account is None for order in self._free_orders)

    def _check_level(self, book: BookSide, level: Level) -> int:
        total_lots = 0
        count = 0
        prev: Order | None = None
        order = level.head
        while order is not None:
            assert order.level is level and order.prev is prev and order.price_ticks == level.price_ticks
            assert order.leaves_lots > 0 and order.leaves_lots + order.filled_lots == order.qty_lots
            assert (order.side == SIDE_BUY) == book.is_bid and self.orders[order.order_id] is order
            assert order.account is self.by_account[order.account_id]
            total_lots += order.leaves_lots
            count += 1
            prev = order
            order = order.next
        assert level.tail is prev and count == level.count > 0 and total_lots == level.total_lots
        return count

    # --- state ---------------------------------------------------------------------------------------
    def _orders_in_priority(self) -> list[Order]:
        out: list[Order] = []
        for book in (self.bids, self.asks):
            for level in book.best_first(book.count()):
                order = level.head
                while order is not None:
                    out.append(order)
                    order = order.next
        return out

    def to_snapshot(self) -> bytes:
        """Canonical bytes of the whole state: `PLMX` u16 version u32 json_len, JSON, u32 n, n x i64 seen
        order ids, u32 m, m x i64 applied input ids (each oldest first). Orders are listed bids best first then asks best first, each level in time
        priority."""
        orders = [[o.order_id, o.account_id, o.side, o.tif, o.price_ticks, o.qty_lots, o.leaves_lots,
                   o.filled_lots, o.stp, 1 if o.reduce_only else 0, o.client_order_id, o.ts_ns]
                  for o in self._orders_in_priority()]
        doc: dict[str, object] = {"symbol": self.symbol, "seq": self.seq, "trade_seq": self.trade_seq,
                                  "config": self.config.to_dict(), "orders": orders}
        body = json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()
        seen = self.seen.oldest_first()
        applied = self.applied.oldest_first()
        parts = [_SNAP_HEAD.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, len(body)), body, _U32.pack(len(seen)),
                 struct.pack(f"<{len(seen)}q", *seen), _U32.pack(len(applied)), struct.pack(f"<{len(applied)}q", *applied)]
        return b"".join(parts)

    def state_hash(self) -> str:
        """sha256 hex of `to_snapshot()`: config, seq and trade id counters, every resting order
        in priority order and the remembered order and input ids."""
        return hashlib.sha256(self.to_snapshot()).hexdigest()

    @staticmethod
    def from_snapshot(data: bytes) -> Engine:
        return from_snapshot(data)


def from_snapshot(data: bytes) -> Engine:
    """Rebuild an engine from `Engine.to_snapshot()`; raises ValueError on malformed data."""
    if len(data) < _SNAP_HEAD.size:
        raise ValueError("snapshot too short")
    magic, version, body_len = _SNAP_HEAD.unpack_from(data, 0)
    if magic != SNAPSHOT_MAGIC or version not in (2, SNAPSHOT_VERSION):
        raise ValueError(f"not a matcher snapshot of version 2 or {SNAPSHOT_VERSION}")
    seen_at = _SNAP_HEAD.size + body_len
    doc = json.loads(data[_SNAP_HEAD.size:seen_at])
    seen, applied_at = _id_array(data, seen_at)
    applied: list[int] = []
    if version == SNAPSHOT_VERSION:
        applied, applied_at = _id_array(data, applied_at)
    if len(data) != applied_at:
        raise ValueError("snapshot length mismatch")
    try:
        engine = _engine_from_doc(doc)
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"malformed snapshot: {exc!r}") from exc
    for order_id in seen:
        engine.seen.add(order_id)
    engine.max_consumed_id = max([0, *seen, *[int(o) for o in engine.orders]])
    for input_id in applied:
        engine.applied.add(input_id)
    engine.check_invariants()
    return engine


def _id_array(data: bytes, at: int) -> tuple[list[int], int]:
    """(u32 n, then n x i64) at `at`: the ids and where the array ends."""
    if len(data) < at + _U32.size:
        raise ValueError("snapshot truncated")
    (count,) = _U32.unpack_from(data, at)
    end = at + _U32.size + 8 * count
    if len(data) < end:
        raise ValueError("snapshot truncated")
    return [int(x) for x in struct.unpack_from(f"<{count}q", data, at + _U32.size)], end


def _engine_from_doc(doc: dict[str, Any]) -> Engine:
    engine = Engine(str(doc["symbol"]), config_from_dict(doc["config"]))
    engine.seq = int(doc["seq"])
    engine.trade_seq = int(doc["trade_seq"])
    for row in doc["orders"]:
        order = engine._new_order(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[5]),
                                  int(row[8]), int(row[9]) == 1, str(row[10]), int(row[11]), int(row[0]))
        order.leaves_lots = int(row[6])
        order.filled_lots = int(row[7])
        engine._level_for(engine._side(order.side), order.price_ticks).append(order)
        engine._index(order)
    return engine


# --- measurement helpers (compiled with the core, so the caller's loop costs no interpreter time) ---
@final
class StepTiming:
    """What `time_steps` measured: events and traded lots consumed, and sampled per-command latency."""

    def __init__(self) -> None:
        self.events = 0
        self.volume_lots = 0
        self.elapsed_ns = 0
        self.samples_ns: list[int] = []


def time_steps(engine: Engine, cmds: list[Command], sample_every: int) -> StepTiming:
    """Drive `engine.step` once per command, reading every event (kind, qty) as a consumer would,
    timing every `sample_every`-th command on its own. Benchmarks call this."""
    out = StepTiming()
    clock = time.perf_counter_ns
    started = clock()
    n = 0
    for cmd in cmds:
        sampled = n % sample_every == 0
        t0 = clock() if sampled else 0
        count = engine.step(cmd)
        buf = engine._buf
        for i in range(count):
            ev = buf[i]
            if ev.kind == EV_TRADE:
                out.volume_lots += ev.qty_lots
        out.events += count
        if sampled:
            out.samples_ns.append(clock() - t0)
        n += 1
    out.elapsed_ns = clock() - started
    return out


def batches_of(cmds: list[Command], batch_size: int) -> list[Batch]:
    """The commands as consecutive Batches of `batch_size` (what the shell builds from a consumed batch)."""
    out: list[Batch] = []
    for start in range(0, len(cmds), batch_size):
        batch = Batch()
        for cmd in cmds[start:start + batch_size]:
            batch.add(cmd)
        out.append(batch)
    return out


def time_batches(engine: Engine, batches: list[Batch]) -> StepTiming:
    """Drive `engine.run` over the batches, reading every event (kind, qty) as a consumer would."""
    out = StepTiming()
    clock = time.perf_counter_ns
    started = clock()
    for batch in batches:
        count = engine.run(batch)
        buf = engine._buf
        for i in range(count):
            ev = buf[i]
            if ev.kind == EV_TRADE:
                out.volume_lots += ev.qty_lots
        out.events += count
    out.elapsed_ns = clock() - started
    return out
