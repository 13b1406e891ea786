"""Matching engine core: one price-time priority book per symbol, integers only.

Pure and deterministic: (state, input) -> events. Standard library only, so mypyc can
compile it; the same source runs uncompiled. Bad input never raises: it yields one
EV_REJECTED event with a result code. Every event carries a gap-free `seq`.

Semantics (Binance USD-M where it defines them):
- LIMIT GTC rests its remainder; IOC and MARKET expire theirs; FOK fills completely
  against the book at that instant or is EXPIRED with R_FOK_NOT_FILLABLE, trading nothing;
  GTX (post-only) is REJECTED with R_POST_ONLY_WOULD_TAKE if it would take.
- MARKET fills no further than market_protection_ppm from the best opposite price at
  arrival; the rest expires. A market order on an empty side is REJECTED (R_NO_LIQUIDITY).
- Self-trade prevention when taker and maker share an account: EXPIRE_TAKER expires the
  taker's remainder, EXPIRE_MAKER expires the maker and continues, EXPIRE_BOTH expires both.
- Order ids are unique forever: a reused id (live or seen before, up to max_seen_ids
  remembered) is REJECTED with R_DUPLICATE_ORDER_ID and changes nothing else.
- Amend: quantity down at the same price keeps time priority; a price change or a
  quantity increase re-queues the order (it may trade).
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left, insort
from typing import Final

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

SNAPSHOT_VERSION: Final = 1
PPM: Final = 1_000_000


class Event:
    """One output of the engine. For a TRADE, order_*/account_id/side describe the taker."""

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

    def as_tuple(self) -> tuple[int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, str]:
        return (self.kind, self.seq, self.order_id, self.account_id, self.side, self.price_ticks, self.qty_lots,
                self.leaves_lots, self.filled_lots, self.maker_order_id, self.maker_account_id,
                self.maker_leaves_lots, self.trade_id, self.code, self.ts_ns, self.client_order_id)

    def __repr__(self) -> str:
        return f"Event{self.as_tuple()}"


class EngineConfig:
    def __init__(self, max_orders: int = 1_000_000, max_levels: int = 100_000, max_events_per_input: int = 10_000,
                 max_price_ticks: int = 10**12, max_qty_lots: int = 10**12, market_protection_ppm: int = 50_000,
                 default_stp: int = STP_EXPIRE_TAKER, max_seen_ids: int = 10_000_000) -> None:
        assert max_orders > 0 and max_levels > 0 and max_events_per_input >= 8
        assert 0 < market_protection_ppm < PPM and default_stp in (0, 1, 2, 3)
        self.max_orders = max_orders
        self.max_levels = max_levels
        self.max_events_per_input = max_events_per_input
        self.max_price_ticks = max_price_ticks
        self.max_qty_lots = max_qty_lots
        self.market_protection_ppm = market_protection_ppm
        self.default_stp = default_stp
        self.max_seen_ids = max_seen_ids

    def to_dict(self) -> dict[str, int]:
        return {"max_orders": self.max_orders, "max_levels": self.max_levels,
                "max_events_per_input": self.max_events_per_input, "max_price_ticks": self.max_price_ticks,
                "max_qty_lots": self.max_qty_lots, "market_protection_ppm": self.market_protection_ppm,
                "default_stp": self.default_stp, "max_seen_ids": self.max_seen_ids}


class Order:
    def __init__(self, order_id: int, account_id: int, side: int, price_ticks: int, qty_lots: int, stp: int,
                 reduce_only: bool, client_order_id: str, ts_ns: int) -> None:
        self.order_id = order_id
        self.account_id = account_id
        self.side = side
        self.price_ticks = price_ticks
        self.qty_lots = qty_lots
        self.leaves_lots = qty_lots
        self.filled_lots = 0
        self.stp = stp
        self.reduce_only = reduce_only
        self.client_order_id = client_order_id
        self.ts_ns = ts_ns
        self.prev: Order | None = None
        self.next: Order | None = None
        self.level: Level | None = None


class Level:
    """A FIFO of orders at one price: a doubly linked list, O(1) append and removal."""

    def __init__(self, price_ticks: int) -> None:
        self.price_ticks = price_ticks
        self.head: Order | None = None
        self.tail: Order | None = None
        self.total_lots = 0
        self.count = 0

    def append(self, order: Order) -> None:
        order.level = self
        order.prev = self.tail
        order.next = None
        if self.tail is None:
            self.head = order
        else:
            self.tail.next = order
        self.tail = order
        self.total_lots += order.leaves_lots
        self.count += 1

    def remove(self, order: Order) -> None:
        if order.prev is None:
            self.head = order.next
        else:
            order.prev.next = order.next
        if order.next is None:
            self.tail = order.prev
        else:
            order.next.prev = order.prev
        self.total_lots -= order.leaves_lots
        self.count -= 1
        order.prev = None
        order.next = None
        order.level = None


class BookSide:
    """One side: levels by price plus a sorted list of prices (best is last for bids, first for asks)."""

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.levels: dict[int, Level] = {}
        self.prices: list[int] = []

    def best(self) -> Level | None:
        if not self.prices:
            return None
        return self.levels[self.prices[-1] if self.is_bid else self.prices[0]]

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

    def ordered_levels(self) -> list[Level]:
        prices = list(reversed(self.prices)) if self.is_bid else self.prices
        return [self.levels[p] for p in prices]


def _crosses(taker_side: int, limit_ticks: int, maker_price_ticks: int) -> bool:
    return maker_price_ticks <= limit_ticks if taker_side == SIDE_BUY else maker_price_ticks >= limit_ticks


class Engine:
    def __init__(self, symbol: str, config: EngineConfig) -> None:
        self.symbol = symbol
        self.config = config
        self.bids = BookSide(True)
        self.asks = BookSide(False)
        self.orders: dict[int, Order] = {}
        self.seen: dict[int, bool] = {}  # insertion ordered: the oldest ids are forgotten first
        self.by_client: dict[str, int] = {}
        self.seq = 0
        self.trade_seq = 0
        self._out: list[Event] = []

    # --- event helpers -----------------------------------------------------------------------
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

    def _reject(self, order_id: int, account_id: int, side: int, code: int, ts_ns: int, client_order_id: str) -> list[Event]:
        event = self._emit(EV_REJECTED, order_id, account_id, side, ts_ns)
        event.code = code
        event.client_order_id = client_order_id
        return self._take()

    def _take(self) -> list[Event]:
        out = self._out
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
        bids = [(lv.price_ticks, lv.total_lots) for lv in self.bids.ordered_levels()[:levels]]
        asks = [(lv.price_ticks, lv.total_lots) for lv in self.asks.ordered_levels()[:levels]]
        return bids, asks

    def open_orders(self, account_id: int) -> list[int]:
        return sorted(oid for oid, o in self.orders.items() if o.account_id == account_id)

    def order_leaves(self, order_id: int) -> int:
        order = self.orders.get(order_id)
        return 0 if order is None else order.leaves_lots

    # --- place ---------------------------------------------------------------------------------
    def _validate(self, order_id: int, side: int, order_type: int, tif: int, price_ticks: int, qty_lots: int,
                  stp: int) -> int:
        if order_id <= 0 or side not in (SIDE_BUY, SIDE_SELL) or order_type not in (TYPE_LIMIT, TYPE_MARKET):
            return R_BAD_INPUT
        if tif not in (TIF_GTC, TIF_IOC, TIF_FOK, TIF_GTX) or stp not in (-1, 0, 1, 2, 3):
            return R_BAD_INPUT
        if order_id in self.seen:
            return R_DUPLICATE_ORDER_ID
        if qty_lots <= 0 or qty_lots > self.config.max_qty_lots:
            return R_BAD_QTY
        if order_type == TYPE_LIMIT and (price_ticks <= 0 or price_ticks > self.config.max_price_ticks):
            return R_BAD_PRICE
        if order_type == TYPE_MARKET and tif == TIF_GTX:
            return R_BAD_INPUT
        if len(self.orders) >= self.config.max_orders:
            return R_BOOK_FULL
        return R_OK

    def place(self, order_id: int, account_id: int, side: int, order_type: int, tif: int, price_ticks: int,
              qty_lots: int, stp: int, reduce_only: bool, client_order_id: str, ts_ns: int) -> list[Event]:
        code = self._validate(order_id, side, order_type, tif, price_ticks, qty_lots, stp)
        if code != R_OK:
            return self._reject(order_id, account_id, side, code, ts_ns, client_order_id)
        limit_ticks = price_ticks
        if order_type == TYPE_MARKET:
            limit_ticks = self._market_bound(side)
            if limit_ticks <= 0:
                return self._reject(order_id, account_id, side, R_NO_LIQUIDITY, ts_ns, client_order_id)
        if tif == TIF_GTX and self._would_take(side, limit_ticks):
            return self._reject(order_id, account_id, side, R_POST_ONLY_WOULD_TAKE, ts_ns, client_order_id)
        rests = order_type == TYPE_LIMIT and tif in (TIF_GTC, TIF_GTX)
        if rests and price_ticks not in self._side(side).levels and len(self._side(side).prices) >= self.config.max_levels:
            return self._reject(order_id, account_id, side, R_TOO_MANY_LEVELS, ts_ns, client_order_id)
        order = Order(order_id, account_id, side, limit_ticks, qty_lots,
                      self.config.default_stp if stp == STP_DEFAULT else stp, reduce_only, client_order_id, ts_ns)
        self._remember(order_id)
        self._order_event(EV_ACCEPTED, order, ts_ns, R_OK)
        if tif == TIF_FOK and self._fillable(order) < qty_lots:
            order.leaves_lots = qty_lots
            self._order_event(EV_EXPIRED, order, ts_ns, R_FOK_NOT_FILLABLE)
            return self._take()
        code = self._match(order, ts_ns)
        if order.leaves_lots > 0:
            if rests and code == R_OK:
                self._rest(order, ts_ns)
            else:
                self._order_event(EV_EXPIRED, order, ts_ns, code)
        return self._take()

    def _remember(self, order_id: int) -> None:
        self.seen[order_id] = True
        if len(self.seen) > self.config.max_seen_ids:
            del self.seen[next(iter(self.seen))]

    def _rest(self, order: Order, ts_ns: int) -> None:
        self._side(order.side).add(order)
        self.orders[order.order_id] = order
        if order.client_order_id:
            self.by_client[self._client_key(order.account_id, order.client_order_id)] = order.order_id
        self._order_event(EV_RESTED, order, ts_ns, R_OK)

    @staticmethod
    def _client_key(account_id: int, client_order_id: str) -> str:
        return f"{account_id}:{client_order_id}"

    def _market_bound(self, side: int) -> int:
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

    def _fillable(self, taker: Order) -> int:
        """Quantity the taker could fill now, not counting makers that STP would skip or stop at."""
        total = 0
        for level in self._opposite(taker.side).ordered_levels():
            if not _crosses(taker.side, taker.price_ticks, level.price_ticks):
                break
            maker = level.head
            while maker is not None:
                if maker.account_id == taker.account_id and taker.stp != STP_NONE:
                    if taker.stp != STP_EXPIRE_MAKER:
                        return total
                else:
                    total += maker.leaves_lots
                    if total >= taker.qty_lots:
                        return total
                maker = maker.next
        return total

    # --- matching --------------------------------------------------------------------------------
    def _match(self, taker: Order, ts_ns: int) -> int:
        """Trade the taker against the opposite side; returns R_OK or why the remainder must expire."""
        book = self._opposite(taker.side)
        budget = self.config.max_events_per_input - 3
        while taker.leaves_lots > 0:
            level = book.best()
            if level is None or not _crosses(taker.side, taker.price_ticks, level.price_ticks):
                return R_OK
            maker = level.head
            assert maker is not None
            if len(self._out) >= budget:
                return R_TOO_MANY_EVENTS
            if maker.account_id == taker.account_id and taker.stp != STP_NONE:
                if taker.stp in (STP_EXPIRE_MAKER, STP_EXPIRE_BOTH):
                    self._remove(maker)
                    self._order_event(EV_EXPIRED, maker, ts_ns, R_SELF_TRADE)
                if taker.stp in (STP_EXPIRE_TAKER, STP_EXPIRE_BOTH):
                    return R_SELF_TRADE
                continue
            self._trade(taker, maker, ts_ns)
        return R_OK

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
        if maker.leaves_lots == 0:
            self._remove(maker)

    def _remove(self, order: Order) -> None:
        self._side(order.side).remove(order)
        del self.orders[order.order_id]
        key = self._client_key(order.account_id, order.client_order_id)
        if self.by_client.get(key) == order.order_id:
            del self.by_client[key]

    # --- cancel and amend --------------------------------------------------------------------------
    def cancel(self, order_id: int, account_id: int, ts_ns: int) -> list[Event]:
        order = self.orders.get(order_id)
        if order is None:
            return self._reject(order_id, account_id, 0, R_UNKNOWN_ORDER, ts_ns, "")
        if order.account_id != account_id:
            return self._reject(order_id, account_id, 0, R_NOT_OWNER, ts_ns, "")
        self._remove(order)
        self._order_event(EV_CANCELLED, order, ts_ns, R_OK)
        return self._take()

    def cancel_by_client_id(self, account_id: int, client_order_id: str, ts_ns: int) -> list[Event]:
        order_id = self.by_client.get(self._client_key(account_id, client_order_id), 0)
        if order_id == 0:
            return self._reject(0, account_id, 0, R_UNKNOWN_ORDER, ts_ns, client_order_id)
        return self.cancel(order_id, account_id, ts_ns)

    def cancel_all(self, account_id: int, ts_ns: int) -> list[Event]:
        for order_id in self.open_orders(account_id):
            order = self.orders[order_id]
            self._remove(order)
            self._order_event(EV_CANCELLED, order, ts_ns, R_OK)
        return self._take()

    def amend(self, order_id: int, account_id: int, new_price_ticks: int, new_qty_lots: int, ts_ns: int) -> list[Event]:
        order = self.orders.get(order_id)
        if order is None:
            return self._reject(order_id, account_id, 0, R_UNKNOWN_ORDER, ts_ns, "")
        if order.account_id != account_id:
            return self._reject(order_id, account_id, order.side, R_NOT_OWNER, ts_ns, "")
        if new_qty_lots <= order.filled_lots or new_qty_lots > self.config.max_qty_lots:
            return self._reject(order_id, account_id, order.side, R_BAD_QTY, ts_ns, order.client_order_id)
        if new_price_ticks <= 0 or new_price_ticks > self.config.max_price_ticks:
            return self._reject(order_id, account_id, order.side, R_BAD_PRICE, ts_ns, order.client_order_id)
        new_leaves = new_qty_lots - order.filled_lots
        if new_price_ticks == order.price_ticks and new_leaves <= order.leaves_lots:
            level = order.level
            assert level is not None
            level.total_lots -= order.leaves_lots - new_leaves
            order.leaves_lots, order.qty_lots = new_leaves, new_qty_lots
            self._order_event(EV_AMENDED, order, ts_ns, R_OK)
            return self._take()
        return self._requeue(order, new_price_ticks, new_qty_lots, new_leaves, ts_ns)

    def _requeue(self, order: Order, price_ticks: int, qty_lots: int, leaves_lots: int, ts_ns: int) -> list[Event]:
        side = self._side(order.side)
        if price_ticks not in side.levels and len(side.prices) >= self.config.max_levels:
            return self._reject(order.order_id, order.account_id, order.side, R_TOO_MANY_LEVELS, ts_ns,
                                order.client_order_id)
        self._remove(order)
        order.price_ticks, order.qty_lots, order.leaves_lots = price_ticks, qty_lots, leaves_lots
        self._order_event(EV_AMENDED, order, ts_ns, R_OK)
        code = self._match(order, ts_ns)
        if order.leaves_lots > 0:
            if code == R_OK:
                self._rest(order, ts_ns)
            else:
                self._order_event(EV_EXPIRED, order, ts_ns, code)
        return self._take()

    # --- state -----------------------------------------------------------------------------------
    def _orders_in_priority(self) -> list[Order]:
        out: list[Order] = []
        for side in (self.bids, self.asks):
            for level in side.ordered_levels():
                order = level.head
                while order is not None:
                    out.append(order)
                    order = order.next
        return out

    def _state_doc(self) -> dict[str, object]:
        orders = [[o.order_id, o.account_id, o.side, o.price_ticks, o.qty_lots, o.leaves_lots, o.filled_lots, o.stp,
                   1 if o.reduce_only else 0, o.client_order_id, o.ts_ns] for o in self._orders_in_priority()]
        return {"version": SNAPSHOT_VERSION, "symbol": self.symbol, "seq": self.seq, "trade_seq": self.trade_seq,
                "config": self.config.to_dict(), "orders": orders, "seen": list(self.seen)}

    def state_hash(self) -> str:
        doc = self._state_doc()
        doc["seen"] = [len(self.seen), sum(self.seen) % (1 << 64)]
        return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()

    def to_snapshot(self) -> bytes:
        return json.dumps(self._state_doc(), separators=(",", ":")).encode()

    @staticmethod
    def from_snapshot(data: bytes) -> Engine:
        doc = json.loads(data)
        assert doc["version"] == SNAPSHOT_VERSION, "unknown snapshot version"
        cfg = doc["config"]
        engine = Engine(str(doc["symbol"]), EngineConfig(
            int(cfg["max_orders"]), int(cfg["max_levels"]), int(cfg["max_events_per_input"]),
            int(cfg["max_price_ticks"]), int(cfg["max_qty_lots"]), int(cfg["market_protection_ppm"]),
            int(cfg["default_stp"]), int(cfg["max_seen_ids"])))
        engine.seq = int(doc["seq"])
        engine.trade_seq = int(doc["trade_seq"])
        for oid in doc["seen"]:
            engine.seen[int(oid)] = True
        for row in doc["orders"]:
            order = Order(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[7]), row[8] == 1,
                          str(row[9]), int(row[10]))
            order.leaves_lots, order.filled_lots = int(row[5]), int(row[6])
            engine._side(order.side).add(order)
            engine.orders[order.order_id] = order
            if order.client_order_id:
                engine.by_client[engine._client_key(order.account_id, order.client_order_id)] = order.order_id
        return engine
