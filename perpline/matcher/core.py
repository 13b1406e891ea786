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
- Order ids are consumed when ACCEPTED: a later order with the same id is REJECTED
  R_DUPLICATE_ORDER_ID (live ids always; finished ids while they are among the last
  config.max_seen_ids accepted, oldest forgotten first). A REJECTED order consumes no id.
  A client_order_id equal to one of the account's LIVE orders is R_BAD_INPUT.
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
from bisect import bisect_left, insort
from typing import Any, Final

SIDE_BUY: Final = 1
SIDE_SELL: Final = 2
TYPE_LIMIT: Final = 1
TYPE_MARKET: Final = 2
TIF_GTC: Final = 1
TIF_IOC: Final = 2
TIF_FOK: Final = 3
TIF_GTX: Final = 4
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
SNAPSHOT_VERSION: Final = 2
PPM: Final = 1_000_000
MAX_ID: Final = (1 << 63) - 1  # order, account ids and ts_ns fit a signed 64-bit integer
MAX_CLIENT_ORDER_ID_CHARS: Final = 64

_SNAP_HEAD: Final = struct.Struct("<4sHI")
_U32: Final = struct.Struct("<I")


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


class Order:
    """A live order. Resting orders are nodes of their level's doubly linked FIFO."""

    def __init__(self, order_id: int, account_id: int, side: int, tif: int, price_ticks: int, qty_lots: int,
                 stp: int, reduce_only: bool, client_order_id: str, ts_ns: int) -> None:
        self.order_id = order_id
        self.account_id = account_id
        self.side = side
        self.tif = tif
        self.price_ticks = price_ticks  # 0 for a market order (it never rests)
        self.qty_lots = qty_lots
        self.leaves_lots = qty_lots
        self.filled_lots = 0
        self.stp = stp  # resolved: never STP_DEFAULT
        self.reduce_only = reduce_only
        self.client_order_id = client_order_id
        self.ts_ns = ts_ns
        self.prev: Order | None = None
        self.next: Order | None = None
        self.level: Level | None = None

    def info(self) -> OrderInfo:
        return OrderInfo(self.order_id, self.account_id, self.side, self.tif, self.price_ticks, self.qty_lots,
                         self.leaves_lots, self.filled_lots, self.stp, self.reduce_only, self.client_order_id,
                         self.ts_ns)


class Level:
    """A FIFO of orders at one price: a doubly linked list, O(1) append and removal."""

    def __init__(self, price_ticks: int) -> None:
        self.price_ticks = price_ticks
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


class BookSide:
    """One side: levels by price plus an ascending list of prices (best is last for bids, first for asks)."""

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.levels: dict[int, Level] = {}
        self.prices: list[int] = []

    def best(self) -> Level | None:
        prices = self.prices
        if not prices:
            return None
        return self.levels[prices[-1] if self.is_bid else prices[0]]

    def add(self, order: Order) -> None:
        level = self.levels.get(order.price_ticks)
        if level is None:
            level = Level(order.price_ticks)
            self.levels[order.price_ticks] = level
            insort(self.prices, order.price_ticks)
        level.append(order)

    def remove(self, order: Order) -> None:
        level = order.level
        assert level is not None, "order not in the book"
        level.remove(order)
        if level.count == 0:
            del self.levels[level.price_ticks]
            index = bisect_left(self.prices, level.price_ticks)
            assert self.prices[index] == level.price_ticks
            del self.prices[index]

    def prices_best_first(self, limit: int) -> list[int]:
        count = min(max(limit, 0), len(self.prices))
        if self.is_bid:
            return self.prices[len(self.prices) - count:][::-1]
        return self.prices[:count]


def _crosses(taker_side: int, limit_ticks: int, maker_price_ticks: int) -> bool:
    if taker_side == SIDE_BUY:
        return maker_price_ticks <= limit_ticks
    return maker_price_ticks >= limit_ticks


def _valid_id(value: int) -> bool:
    return 0 < value <= MAX_ID


class Engine:
    def __init__(self, symbol: str, config: EngineConfig) -> None:
        self.symbol = symbol
        self.config = config
        self.bids = BookSide(True)
        self.asks = BookSide(False)
        self.orders: dict[int, Order] = {}
        self.by_account: dict[int, dict[int, Order]] = {}
        self.by_client: dict[tuple[int, str], Order] = {}
        self.seen: dict[int, None] = {}  # accepted ids, insertion ordered: the oldest are forgotten first
        self.seq = 0  # last seq emitted
        self.trade_seq = 0  # last trade_id emitted
        self._out: list[Event] = []

    # --- events ------------------------------------------------------------------------------
    def _emit(self, kind: int, order_id: int, account_id: int, side: int, ts_ns: int) -> Event:
        self.seq += 1
        event = Event(kind, self.seq, order_id, account_id, side, ts_ns)
        self._out.append(event)
        return event

    def _order_event(self, kind: int, order: Order, ts_ns: int, code: int) -> Event:
        event = self._emit(kind, order.order_id, order.account_id, order.side, ts_ns)
        event.price_ticks = order.price_ticks
        event.qty_lots = order.qty_lots
        event.leaves_lots = order.leaves_lots
        event.filled_lots = order.filled_lots
        event.client_order_id = order.client_order_id
        event.reduce_only = order.reduce_only
        event.code = code
        return event

    def _reject(self, order_id: int, account_id: int, side: int, code: int, ts_ns: int,
                client_order_id: str) -> list[Event]:
        assert not self._out and code != OK
        event = self._emit(EV_REJECTED, order_id, account_id, side, ts_ns)
        event.code = code
        event.client_order_id = client_order_id
        return self._take()

    def _take(self) -> list[Event]:
        out = self._out
        assert len(out) <= self.config.max_events_per_input
        self._out = []
        return out

    def _side(self, side: int) -> BookSide:
        return self.bids if side == SIDE_BUY else self.asks

    def _opposite(self, side: int) -> BookSide:
        return self.asks if side == SIDE_BUY else self.bids

    # --- queries -------------------------------------------------------------------------------
    def best_bid(self) -> int:
        level = self.bids.best()
        return 0 if level is None else level.price_ticks

    def best_ask(self) -> int:
        level = self.asks.best()
        return 0 if level is None else level.price_ticks

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids best first, asks best first) as (price_ticks, total qty_lots), at most `levels` each."""
        bids = [(p, self.bids.levels[p].total_lots) for p in self.bids.prices_best_first(levels)]
        asks = [(p, self.asks.levels[p].total_lots) for p in self.asks.prices_best_first(levels)]
        return bids, asks

    def order(self, order_id: int) -> OrderInfo | None:
        order = self.orders.get(order_id)
        return None if order is None else order.info()

    def open_orders(self, account_id: int) -> list[OrderInfo]:
        """The account's resting orders, ascending order_id."""
        mine = self.by_account.get(account_id)
        if mine is None:
            return []
        return [mine[oid].info() for oid in sorted(mine)]

    def order_leaves(self, order_id: int) -> int:
        order = self.orders.get(order_id)
        return 0 if order is None else order.leaves_lots

    def order_count(self) -> int:
        return len(self.orders)

    def level_counts(self) -> tuple[int, int]:
        """(bid levels, ask levels)."""
        return len(self.bids.prices), len(self.asks.prices)

    # --- place ---------------------------------------------------------------------------------
    def _validate_shape(self, order_id: int, account_id: int, side: int, order_type: int, tif: int, stp: int,
                        client_order_id: str, ts_ns: int) -> int:
        if not _valid_id(order_id) or not _valid_id(account_id) or ts_ns < 0 or ts_ns > MAX_ID:
            return R_BAD_INPUT
        if side != SIDE_BUY and side != SIDE_SELL:
            return R_BAD_INPUT
        if order_type != TYPE_LIMIT and order_type != TYPE_MARKET:
            return R_BAD_INPUT
        if tif < TIF_GTC or tif > TIF_GTX or stp < STP_DEFAULT or stp > STP_EXPIRE_BOTH:
            return R_BAD_INPUT
        if order_type == TYPE_MARKET and tif == TIF_GTX:
            return R_BAD_INPUT
        if len(client_order_id) > MAX_CLIENT_ORDER_ID_CHARS:
            return R_BAD_INPUT
        return OK

    def _validate(self, order_id: int, account_id: int, side: int, order_type: int, tif: int, price_ticks: int,
                  qty_lots: int, stp: int, client_order_id: str, ts_ns: int) -> int:
        code = self._validate_shape(order_id, account_id, side, order_type, tif, stp, client_order_id, ts_ns)
        if code != OK:
            return code
        if qty_lots <= 0 or qty_lots > self.config.max_qty_lots:
            return R_BAD_QTY
        if order_type == TYPE_LIMIT and (price_ticks <= 0 or price_ticks > self.config.max_price_ticks):
            return R_BAD_PRICE
        if order_id in self.orders or order_id in self.seen:
            return R_DUPLICATE_ORDER_ID
        if client_order_id and (account_id, client_order_id) in self.by_client:
            return R_BAD_INPUT
        if order_type == TYPE_LIMIT and (tif == TIF_GTC or tif == TIF_GTX):
            return self._room_to_rest(account_id, side, price_ticks)
        return OK

    def _room_to_rest(self, account_id: int, side: int, price_ticks: int) -> int:
        if len(self.orders) >= self.config.max_orders:
            return R_BOOK_FULL
        mine = self.by_account.get(account_id)
        if mine is not None and len(mine) >= self.config.max_open_per_account:
            return R_BOOK_FULL
        book = self._side(side)
        if price_ticks not in book.levels and len(book.prices) >= self.config.max_levels:
            return R_TOO_MANY_LEVELS
        return OK

    def place(self, order_id: int, account_id: int, side: int, order_type: int, tif: int, price_ticks: int,
              qty_lots: int, stp: int, reduce_only: bool, client_order_id: str, ts_ns: int) -> list[Event]:
        code = self._validate(order_id, account_id, side, order_type, tif, price_ticks, qty_lots, stp,
                              client_order_id, ts_ns)
        if code != OK:
            return self._reject(order_id, account_id, side, code, ts_ns, client_order_id)
        limit_ticks = price_ticks
        if order_type == TYPE_MARKET:
            limit_ticks = self._market_bound(side)
            if limit_ticks <= 0:
                return self._reject(order_id, account_id, side, R_NO_LIQUIDITY, ts_ns, client_order_id)
        elif tif == TIF_GTX and self._would_take(side, limit_ticks):
            return self._reject(order_id, account_id, side, R_POST_ONLY_WOULD_TAKE, ts_ns, client_order_id)
        order = Order(order_id, account_id, side, tif, price_ticks if order_type == TYPE_LIMIT else 0, qty_lots,
                      self.config.default_stp if stp == STP_DEFAULT else stp, reduce_only, client_order_id, ts_ns)
        self._remember(order_id)
        self._order_event(EV_ACCEPTED, order, ts_ns, OK)
        if tif == TIF_FOK:
            code = self._fok_check(order, limit_ticks)
            if code != OK:
                self._order_event(EV_EXPIRED, order, ts_ns, code)
                return self._take()
        rests = order_type == TYPE_LIMIT and (tif == TIF_GTC or tif == TIF_GTX)
        self._match_then_finish(order, limit_ticks, rests, ts_ns)
        assert tif != TIF_FOK or order.leaves_lots == 0, "FOK passed its check but did not fill"
        return self._take()

    def _match_then_finish(self, order: Order, limit_ticks: int, rests: bool, ts_ns: int) -> None:
        code = self._match(order, limit_ticks, ts_ns)
        if order.leaves_lots == 0:
            return
        if rests and code == OK:
            self._rest(order, ts_ns)
        else:
            self._order_event(EV_EXPIRED, order, ts_ns, code)
            self._forget_live(order)

    def _remember(self, order_id: int) -> None:
        if self.config.max_seen_ids == 0:
            return
        self.seen[order_id] = None
        if len(self.seen) > self.config.max_seen_ids:
            del self.seen[next(iter(self.seen))]

    def _rest(self, order: Order, ts_ns: int) -> None:
        """Put a non-crossing remainder on the book; its id and client id are already indexed."""
        assert order.leaves_lots > 0 and order.price_ticks > 0
        assert not self._would_take(order.side, order.price_ticks), "resting would cross the book"
        self._side(order.side).add(order)
        self._index(order)
        self._order_event(EV_RESTED, order, ts_ns, OK)

    def _index(self, order: Order) -> None:
        self.orders[order.order_id] = order
        mine = self.by_account.get(order.account_id)
        if mine is None:
            mine = {}
            self.by_account[order.account_id] = mine
        mine[order.order_id] = order
        if order.client_order_id:
            self.by_client[(order.account_id, order.client_order_id)] = order

    def _forget_live(self, order: Order) -> None:
        """Drop a finished order from the live indexes (a no-op for an order never rested)."""
        if self.orders.pop(order.order_id, None) is None:
            return
        mine = self.by_account[order.account_id]
        del mine[order.order_id]
        if not mine:
            del self.by_account[order.account_id]
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
        prices = book.prices if not book.is_bid else book.prices[::-1]
        total_lots = 0
        makers = 0
        budget = self.config.max_events_per_input - 2  # ACCEPTED, then one event per maker met
        for price_ticks in prices:
            if not _crosses(taker.side, limit_ticks, price_ticks):
                break
            maker = book.levels[price_ticks].head
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
        is_buy = taker.side == SIDE_BUY
        stop_at = self.config.max_events_per_input - 1  # room for this step's event and a final one
        while taker.leaves_lots > 0:
            level = book.best()
            if level is None:
                return OK
            if (level.price_ticks > limit_ticks) if is_buy else (level.price_ticks < limit_ticks):
                return OK
            if len(self._out) >= stop_at:
                return R_TOO_MANY_EVENTS
            maker = level.head
            assert maker is not None
            if maker.account_id == taker.account_id and taker.stp != STP_NONE:
                if taker.stp != STP_EXPIRE_TAKER:
                    self._remove(maker)
                    self._order_event(EV_EXPIRED, maker, ts_ns, R_SELF_TRADE)
                if taker.stp != STP_EXPIRE_MAKER:
                    return R_SELF_TRADE
                continue
            self._trade(taker, maker, ts_ns)
        return OK

    def _trade(self, taker: Order, maker: Order, ts_ns: int) -> None:
        qty_lots = min(taker.leaves_lots, maker.leaves_lots)
        level = maker.level
        assert level is not None and qty_lots > 0
        taker.leaves_lots -= qty_lots
        taker.filled_lots += qty_lots
        maker.leaves_lots -= qty_lots
        maker.filled_lots += qty_lots
        level.total_lots -= qty_lots
        self.trade_seq += 1
        event = self._emit(EV_TRADE, taker.order_id, taker.account_id, taker.side, ts_ns)
        event.price_ticks = maker.price_ticks
        event.qty_lots = qty_lots
        event.leaves_lots = taker.leaves_lots
        event.filled_lots = taker.filled_lots
        event.maker_order_id = maker.order_id
        event.maker_account_id = maker.account_id
        event.maker_leaves_lots = maker.leaves_lots
        event.maker_filled_lots = maker.filled_lots
        event.trade_id = self.trade_seq
        event.client_order_id = taker.client_order_id
        event.reduce_only = taker.reduce_only
        if maker.leaves_lots == 0:
            self._remove(maker)

    def _remove(self, order: Order) -> None:
        """Take a resting order off the book and out of every index."""
        self._side(order.side).remove(order)
        self._forget_live(order)

    # --- cancel and amend --------------------------------------------------------------------------
    def cancel(self, order_id: int, account_id: int, ts_ns: int) -> list[Event]:
        order = self.orders.get(order_id)
        if order is None:
            return self._reject(order_id, account_id, 0, R_UNKNOWN_ORDER, ts_ns, "")
        if order.account_id != account_id:
            return self._reject(order_id, account_id, 0, R_NOT_OWNER, ts_ns, "")
        self._remove(order)
        self._order_event(EV_CANCELLED, order, ts_ns, OK)
        return self._take()

    def cancel_by_client_id(self, account_id: int, client_order_id: str, ts_ns: int) -> list[Event]:
        order = self.by_client.get((account_id, client_order_id)) if client_order_id else None
        if order is None:
            return self._reject(0, account_id, 0, R_UNKNOWN_ORDER, ts_ns, client_order_id)
        return self.cancel(order.order_id, account_id, ts_ns)

    def cancel_all(self, account_id: int, ts_ns: int) -> list[Event]:
        """One CANCELLED per resting order of the account, ascending order_id; none -> no events."""
        mine = self.by_account.get(account_id)
        if mine is None:
            return []
        for order_id in sorted(mine):
            order = self.orders[order_id]
            self._remove(order)
            self._order_event(EV_CANCELLED, order, ts_ns, OK)
        assert account_id not in self.by_account
        return self._take()

    def amend(self, order_id: int, account_id: int, new_price_ticks: int, new_qty_lots: int,
              ts_ns: int) -> list[Event]:
        order = self.orders.get(order_id)
        if order is None:
            return self._reject(order_id, account_id, 0, R_UNKNOWN_ORDER, ts_ns, "")
        if order.account_id != account_id:
            return self._reject(order_id, account_id, 0, R_NOT_OWNER, ts_ns, "")
        code = self._amend_code(order, new_price_ticks, new_qty_lots, ts_ns)
        if code != OK:
            return self._reject(order_id, account_id, order.side, code, ts_ns, order.client_order_id)
        new_leaves = new_qty_lots - order.filled_lots
        if new_price_ticks == order.price_ticks and new_leaves <= order.leaves_lots:
            level = order.level
            assert level is not None
            level.total_lots -= order.leaves_lots - new_leaves
            order.leaves_lots = new_leaves
            order.qty_lots = new_qty_lots
            self._order_event(EV_AMENDED, order, ts_ns, OK)
            return self._take()
        self._side(order.side).remove(order)
        order.price_ticks = new_price_ticks
        order.qty_lots = new_qty_lots
        order.leaves_lots = new_leaves
        self._order_event(EV_AMENDED, order, ts_ns, OK)
        code = self._match(order, new_price_ticks, ts_ns)
        if order.leaves_lots > 0 and code == OK:
            self._side(order.side).add(order)
            self._order_event(EV_RESTED, order, ts_ns, OK)
        elif order.leaves_lots > 0:
            self._order_event(EV_EXPIRED, order, ts_ns, code)
            self._forget_live(order)
        else:
            self._forget_live(order)
        return self._take()

    def _amend_code(self, order: Order, new_price_ticks: int, new_qty_lots: int, ts_ns: int) -> int:
        if ts_ns < 0 or ts_ns > MAX_ID:
            return R_BAD_INPUT
        if new_qty_lots <= order.filled_lots or new_qty_lots > self.config.max_qty_lots:
            return R_BAD_QTY
        if new_price_ticks <= 0 or new_price_ticks > self.config.max_price_ticks:
            return R_BAD_PRICE
        if new_price_ticks == order.price_ticks:
            return OK
        if order.tif == TIF_GTX and self._would_take(order.side, new_price_ticks):
            return R_POST_ONLY_WOULD_TAKE
        book = self._side(order.side)
        level = order.level
        assert level is not None
        levels_after_leaving = len(book.prices) - (1 if level.count == 1 else 0)
        if new_price_ticks not in book.levels and levels_after_leaving >= self.config.max_levels:
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
            assert book.prices == sorted(book.levels) and len(book.prices) <= self.config.max_levels
            for price_ticks in book.prices:
                count += self._check_level(book, book.levels[price_ticks])
        assert count == len(self.orders) <= self.config.max_orders
        assert sum(len(mine) for mine in self.by_account.values()) == count
        assert all(self.orders.get(o.order_id) is o for o in self.by_client.values())
        assert len(self.by_client) == sum(1 for o in self.orders.values() if o.client_order_id)
        assert len(self.seen) <= self.config.max_seen_ids

    def _check_level(self, book: BookSide, level: Level) -> int:
        total_lots = 0
        count = 0
        prev: Order | None = None
        order = level.head
        while order is not None:
            assert order.level is level and order.prev is prev and order.price_ticks == level.price_ticks
            assert order.leaves_lots > 0 and order.leaves_lots + order.filled_lots == order.qty_lots
            assert (order.side == SIDE_BUY) == book.is_bid and self.orders[order.order_id] is order
            assert self.by_account[order.account_id][order.order_id] is order
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
            for price_ticks in book.prices_best_first(len(book.prices)):
                order = book.levels[price_ticks].head
                while order is not None:
                    out.append(order)
                    order = order.next
        return out

    def to_snapshot(self) -> bytes:
        """Canonical bytes of the whole state: `PLMX` u16 version u32 json_len, JSON, u32 n, n x i64 seen ids.

        Orders are listed bids best first then asks best first, each level in time priority."""
        orders = [[o.order_id, o.account_id, o.side, o.tif, o.price_ticks, o.qty_lots, o.leaves_lots,
                   o.filled_lots, o.stp, 1 if o.reduce_only else 0, o.client_order_id, o.ts_ns]
                  for o in self._orders_in_priority()]
        doc: dict[str, object] = {"symbol": self.symbol, "seq": self.seq, "trade_seq": self.trade_seq,
                                  "config": self.config.to_dict(), "orders": orders}
        body = json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()
        seen = list(self.seen)
        parts = [_SNAP_HEAD.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, len(body)), body, _U32.pack(len(seen)),
                 struct.pack(f"<{len(seen)}q", *seen)]
        return b"".join(parts)

    def state_hash(self) -> str:
        """sha256 hex of `to_snapshot()`: config, seq and trade id counters, every resting order
        in priority order and the remembered order ids."""
        return hashlib.sha256(self.to_snapshot()).hexdigest()

    @staticmethod
    def from_snapshot(data: bytes) -> Engine:
        return from_snapshot(data)


def from_snapshot(data: bytes) -> Engine:
    """Rebuild an engine from `Engine.to_snapshot()`; raises ValueError on malformed data."""
    if len(data) < _SNAP_HEAD.size:
        raise ValueError("snapshot too short")
    magic, version, body_len = _SNAP_HEAD.unpack_from(data, 0)
    if magic != SNAPSHOT_MAGIC or version != SNAPSHOT_VERSION:
        raise ValueError(f"not a matcher snapshot of version {SNAPSHOT_VERSION}")
    seen_at = _SNAP_HEAD.size + body_len
    if len(data) < seen_at + _U32.size:
        raise ValueError("snapshot truncated")
    doc = json.loads(data[_SNAP_HEAD.size:seen_at])
    (seen_count,) = _U32.unpack_from(data, seen_at)
    if len(data) != seen_at + _U32.size + 8 * seen_count:
        raise ValueError("snapshot length mismatch")
    try:
        engine = _engine_from_doc(doc)
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"malformed snapshot: {exc!r}") from exc
    for order_id in struct.unpack_from(f"<{seen_count}q", data, seen_at + _U32.size):
        engine.seen[int(order_id)] = None
    engine.check_invariants()
    return engine


def _engine_from_doc(doc: dict[str, Any]) -> Engine:
    engine = Engine(str(doc["symbol"]), config_from_dict(doc["config"]))
    engine.seq = int(doc["seq"])
    engine.trade_seq = int(doc["trade_seq"])
    for row in doc["orders"]:
        order = Order(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[5]), int(row[8]),
                      int(row[9]) == 1, str(row[10]), int(row[11]))
        order.leaves_lots = int(row[6])
        order.filled_lots = int(row[7])
        engine._side(order.side).add(order)
        engine._index(order)
    return engine
