"""A deliberately simple reference book for differential tests: one list, linear scans.

Same inputs and the same semantics as `core.Engine` (see its module docstring), written
independently and without any cleverness: the best maker is found by scanning every resting
order for the best (price, arrival) key. Slow on purpose; never use it for real traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perpline.matcher.loader import load_core

C: Any = load_core(pure=True)  # constants and the Event record only


@dataclass
class NOrder:
    order_id: int
    account_id: int
    side: int
    tif: int
    price_ticks: int
    qty_lots: int
    leaves_lots: int
    filled_lots: int
    stp: int
    reduce_only: bool
    client_order_id: str
    ts_ns: int
    arrival: int = 0  # time priority: smaller is older


class NaiveBook:
    def __init__(self, symbol: str, config: Any) -> None:
        self.symbol = symbol
        self.config = config
        self.resting: list[NOrder] = []
        self.seen: list[int] = []
        self.applied: list[int] = []  # input ids of cancels / amends applied, oldest first
        self.seq = 0
        self.trade_seq = 0
        self.arrivals = 0
        self.out: list[Any] = []

    # --- helpers ---------------------------------------------------------------
    def emit(self, kind: int, order_id: int, account_id: int, side: int, ts_ns: int, **fields: Any) -> Any:
        self.seq += 1
        event = C.Event(kind, self.seq, order_id, account_id, side, ts_ns)
        for name, value in fields.items():
            setattr(event, name, value)
        self.out.append(event)
        return event

    def order_event(self, kind: int, o: NOrder, ts_ns: int, code: int) -> None:
        self.emit(kind, o.order_id, o.account_id, o.side, ts_ns, price_ticks=o.price_ticks, qty_lots=o.qty_lots,
                  leaves_lots=o.leaves_lots, filled_lots=o.filled_lots, client_order_id=o.client_order_id,
                  reduce_only=o.reduce_only, code=code)

    def reject(self, order_id: int, account_id: int, side: int, code: int, ts_ns: int, coid: str) -> list[Any]:
        self.emit(C.EV_REJECTED, order_id, account_id, side, ts_ns, code=code, client_order_id=coid)
        return self.take()

    def first_time(self, oid: int, acct: int, input_id: int, ts_ns: int) -> bool:
        """An input identity applied before (among the last max_seen_ids) -> False: emit nothing."""
        if input_id == 0:
            return True
        if not 0 < input_id <= C.MAX_ID:
            self.emit(C.EV_REJECTED, oid, acct, 0, max(0, min(ts_ns, C.MAX_ID)), code=C.R_BAD_INPUT)
            return False
        if input_id in self.applied:
            return False
        if self.config.max_seen_ids > 0:
            self.applied.append(input_id)
            if len(self.applied) > self.config.max_seen_ids:
                self.applied.pop(0)
        return True

    def take(self) -> list[Any]:
        out, self.out = self.out, []
        return out

    def find(self, order_id: int) -> NOrder | None:
        for o in self.resting:
            if o.order_id == order_id:
                return o
        return None

    def side_prices(self, side: int) -> set[int]:
        return {o.price_ticks for o in self.resting if o.side == side}

    def best_maker(self, taker_side: int) -> NOrder | None:
        makers = [o for o in self.resting if o.side != taker_side]
        if not makers:
            return None
        if taker_side == C.SIDE_BUY:
            return min(makers, key=lambda o: (o.price_ticks, o.arrival))
        return min(makers, key=lambda o: (-o.price_ticks, o.arrival))

    def makers_in_order(self, taker_side: int) -> list[NOrder]:
        makers = [o for o in self.resting if o.side != taker_side]
        sign = 1 if taker_side == C.SIDE_BUY else -1
        return sorted(makers, key=lambda o: (sign * o.price_ticks, o.arrival))

    @staticmethod
    def crosses(side: int, limit: int, price: int) -> bool:
        return price <= limit if side == C.SIDE_BUY else price >= limit

    def add(self, o: NOrder) -> None:
        self.arrivals += 1
        o.arrival = self.arrivals
        self.resting.append(o)

    # --- queries ---------------------------------------------------------------
    def best_bid(self) -> int:
        return max((o.price_ticks for o in self.resting if o.side == C.SIDE_BUY), default=0)

    def best_ask(self) -> int:
        return min((o.price_ticks for o in self.resting if o.side == C.SIDE_SELL), default=0)

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        out: list[list[tuple[int, int]]] = []
        for side, reverse in ((C.SIDE_BUY, True), (C.SIDE_SELL, False)):
            totals: dict[int, int] = {}
            for o in self.resting:
                if o.side == side:
                    totals[o.price_ticks] = totals.get(o.price_ticks, 0) + o.leaves_lots
            out.append(sorted(totals.items(), reverse=reverse)[:max(levels, 0)])
        return out[0], out[1]

    def open_order_ids(self, account_id: int) -> list[int]:
        return sorted(o.order_id for o in self.resting if o.account_id == account_id)

    # --- place -----------------------------------------------------------------
    def validate(self, oid: int, acct: int, side: int, otype: int, tif: int, price: int, qty: int, stp: int,
                 coid: str, ts_ns: int) -> int:
        cfg = self.config
        if not (0 < oid <= C.MAX_ID and 0 < acct <= C.MAX_ID and 0 <= ts_ns <= C.MAX_ID):
            return C.R_BAD_INPUT
        if side not in (C.SIDE_BUY, C.SIDE_SELL) or otype not in (C.TYPE_LIMIT, C.TYPE_MARKET):
            return C.R_BAD_INPUT
        if tif not in (1, 2, 3, 4, 5) or stp not in (-1, 0, 1, 2, 3) or (otype == C.TYPE_MARKET and tif in (4, 5)):
            return C.R_BAD_INPUT
        if len(coid) > C.MAX_CLIENT_ORDER_ID_CHARS:
            return C.R_BAD_INPUT
        if not 0 < qty <= cfg.max_qty_lots:
            return C.R_BAD_QTY
        if otype == C.TYPE_LIMIT and not 0 < price <= cfg.max_price_ticks:
            return C.R_BAD_PRICE
        if self.find(oid) is not None or oid in self.seen:
            return C.R_DUPLICATE_ORDER_ID
        return C.OK

    def reprice(self, side: int, price: int) -> int:
        """GTX_REPRICE: one tick inside the opposite best when it would take; 0 if out of range."""
        best = self.best_maker(side)
        if best is None or not self.crosses(side, price, best.price_ticks):
            return price
        moved = best.price_ticks - 1 if side == C.SIDE_BUY else best.price_ticks + 1
        return moved if 0 < moved <= self.config.max_price_ticks else 0

    def room(self, acct: int, side: int, otype: int, tif: int, price: int) -> int:
        cfg = self.config
        if otype == C.TYPE_LIMIT and tif in (C.TIF_GTC, C.TIF_GTX, C.TIF_GTX_REPRICE):
            if len(self.resting) >= cfg.max_orders:
                return C.R_BOOK_FULL
            if len(self.open_order_ids(acct)) >= cfg.max_open_per_account:
                return C.R_BOOK_FULL
            prices = self.side_prices(side)
            if price not in prices and len(prices) >= cfg.max_levels:
                return C.R_TOO_MANY_LEVELS
        return C.OK

    def place(self, oid: int, acct: int, side: int, otype: int, tif: int, price: int, qty: int, stp: int,
              reduce_only: bool, coid: str, ts_ns: int) -> list[Any]:
        code = self.validate(oid, acct, side, otype, tif, price, qty, stp, coid, ts_ns)
        if code:
            return self.reject(oid, acct, side, code, ts_ns, coid)
        if self.config.max_seen_ids > 0:  # consumed from here on, even by a rejection
            self.seen.append(oid)
            if len(self.seen) > self.config.max_seen_ids:
                self.seen.pop(0)
        if coid and any(o.account_id == acct and o.client_order_id == coid for o in self.resting):
            return self.reject(oid, acct, side, C.R_BAD_INPUT, ts_ns, coid)
        if tif == C.TIF_GTX_REPRICE:
            price = self.reprice(side, price)
            if price == 0:
                return self.reject(oid, acct, side, C.R_POST_ONLY_WOULD_TAKE, ts_ns, coid)
        code = self.room(acct, side, otype, tif, price)
        if code:
            return self.reject(oid, acct, side, code, ts_ns, coid)
        limit = price
        if otype == C.TYPE_MARKET:
            best = self.best_ask() if side == C.SIDE_BUY else self.best_bid()
            if best == 0:
                return self.reject(oid, acct, side, C.R_NO_LIQUIDITY, ts_ns, coid)
            ppm = self.config.market_protection_ppm
            # buy: floor(best * (1 + p)); sell: ceil(best * (1 - p)), at least 1 tick
            limit = (best * (C.PPM + ppm)) // C.PPM if side == C.SIDE_BUY else max(
                1, (best * (C.PPM - ppm) + C.PPM - 1) // C.PPM)
        elif tif == C.TIF_GTX:
            best = self.best_maker(side)
            if best is not None and self.crosses(side, limit, best.price_ticks):
                return self.reject(oid, acct, side, C.R_POST_ONLY_WOULD_TAKE, ts_ns, coid)
        o = NOrder(oid, acct, side, tif, price if otype == C.TYPE_LIMIT else 0, qty, qty, 0,
                   self.config.default_stp if stp == -1 else stp, reduce_only, coid, ts_ns)
        self.order_event(C.EV_ACCEPTED, o, ts_ns, C.OK)
        if tif == C.TIF_FOK:
            code = self.fok(o, limit)
            if code:
                self.order_event(C.EV_EXPIRED, o, ts_ns, code)
                return self.take()
        code = self.match(o, limit, ts_ns)
        if o.leaves_lots > 0:
            if otype == C.TYPE_LIMIT and tif in (C.TIF_GTC, C.TIF_GTX, C.TIF_GTX_REPRICE) and code == C.OK:
                self.add(o)
                self.order_event(C.EV_RESTED, o, ts_ns, C.OK)
            else:
                self.order_event(C.EV_EXPIRED, o, ts_ns, code)
        return self.take()

    def fok(self, o: NOrder, limit: int) -> int:
        total = 0
        for n, m in enumerate(self.makers_in_order(o.side), start=1):
            if not self.crosses(o.side, limit, m.price_ticks):
                break
            if n > self.config.max_events_per_input - 2:
                return C.R_TOO_MANY_EVENTS
            if m.account_id == o.account_id and o.stp != C.STP_NONE:
                if o.stp != C.STP_EXPIRE_MAKER:
                    return C.R_FOK_NOT_FILLABLE
                continue
            total += m.leaves_lots
            if total >= o.leaves_lots:
                return C.OK
        return C.R_FOK_NOT_FILLABLE

    def match(self, o: NOrder, limit: int, ts_ns: int) -> int:
        while o.leaves_lots > 0:
            m = self.best_maker(o.side)
            if m is None or not self.crosses(o.side, limit, m.price_ticks):
                return C.OK
            if len(self.out) + 1 >= self.config.max_events_per_input:
                return C.R_TOO_MANY_EVENTS
            if m.account_id == o.account_id and o.stp != C.STP_NONE:
                if o.stp in (C.STP_EXPIRE_MAKER, C.STP_EXPIRE_BOTH):
                    self.resting.remove(m)
                    self.order_event(C.EV_EXPIRED, m, ts_ns, C.R_SELF_TRADE)
                if o.stp in (C.STP_EXPIRE_TAKER, C.STP_EXPIRE_BOTH):
                    return C.R_SELF_TRADE
                continue
            qty = min(o.leaves_lots, m.leaves_lots)
            o.leaves_lots -= qty
            o.filled_lots += qty
            m.leaves_lots -= qty
            m.filled_lots += qty
            self.trade_seq += 1
            self.emit(C.EV_TRADE, o.order_id, o.account_id, o.side, ts_ns, price_ticks=m.price_ticks, qty_lots=qty,
                      leaves_lots=o.leaves_lots, filled_lots=o.filled_lots, maker_order_id=m.order_id,
                      maker_account_id=m.account_id, maker_leaves_lots=m.leaves_lots,
                      maker_filled_lots=m.filled_lots, trade_id=self.trade_seq, client_order_id=o.client_order_id,
                      reduce_only=o.reduce_only)
            if m.leaves_lots == 0:
                self.resting.remove(m)
        return C.OK

    # --- cancel / amend ----------------------------------------------------------
    def cancel(self, oid: int, acct: int, ts_ns: int, input_id: int = 0) -> list[Any]:
        if not self.first_time(oid, acct, input_id, ts_ns):
            return self.take()
        o = self.find(oid)
        if o is None:
            return self.reject(oid, acct, 0, C.R_UNKNOWN_ORDER, ts_ns, "")
        if o.account_id != acct:
            return self.reject(oid, acct, 0, C.R_NOT_OWNER, ts_ns, "")
        self.resting.remove(o)
        self.order_event(C.EV_CANCELLED, o, ts_ns, C.OK)
        return self.take()

    def cancel_by_client_id(self, acct: int, coid: str, ts_ns: int, input_id: int = 0) -> list[Any]:
        if not self.first_time(0, acct, input_id, ts_ns):
            return self.take()
        for o in self.resting:
            if coid and o.account_id == acct and o.client_order_id == coid:
                return self.cancel(o.order_id, acct, ts_ns)
        return self.reject(0, acct, 0, C.R_UNKNOWN_ORDER, ts_ns, coid)

    def cancel_all(self, acct: int, ts_ns: int, input_id: int = 0) -> list[Any]:
        if not self.first_time(0, acct, input_id, ts_ns):
            return self.take()
        for oid in self.open_order_ids(acct):
            o = self.find(oid)
            assert o is not None
            self.resting.remove(o)
            self.order_event(C.EV_CANCELLED, o, ts_ns, C.OK)
        return self.take()

    def amend(self, oid: int, acct: int, price: int, qty: int, ts_ns: int, input_id: int = 0) -> list[Any]:
        if not self.first_time(oid, acct, input_id, ts_ns):
            return self.take()
        o = self.find(oid)
        if o is None:
            return self.reject(oid, acct, 0, C.R_UNKNOWN_ORDER, ts_ns, "")
        if o.account_id != acct:
            return self.reject(oid, acct, 0, C.R_NOT_OWNER, ts_ns, "")
        code = self.amend_code(o, price, qty, ts_ns)
        if code:
            return self.reject(oid, acct, o.side, code, ts_ns, o.client_order_id)
        leaves = qty - o.filled_lots
        keeps_priority = price == o.price_ticks and leaves <= o.leaves_lots
        o.price_ticks, o.qty_lots, o.leaves_lots = price, qty, leaves
        if keeps_priority:
            self.order_event(C.EV_AMENDED, o, ts_ns, C.OK)
            return self.take()
        self.resting.remove(o)
        self.order_event(C.EV_AMENDED, o, ts_ns, C.OK)
        code = self.match(o, price, ts_ns)
        if o.leaves_lots > 0 and code == C.OK:
            self.add(o)
            self.order_event(C.EV_RESTED, o, ts_ns, C.OK)
        elif o.leaves_lots > 0:
            self.order_event(C.EV_EXPIRED, o, ts_ns, code)
        return self.take()

    def amend_code(self, o: NOrder, price: int, qty: int, ts_ns: int) -> int:
        if not 0 <= ts_ns <= C.MAX_ID:
            return C.R_BAD_INPUT
        if not o.filled_lots < qty <= self.config.max_qty_lots:
            return C.R_BAD_QTY
        if not 0 < price <= self.config.max_price_ticks:
            return C.R_BAD_PRICE
        if price == o.price_ticks:
            return C.OK
        best = self.best_maker(o.side)
        if o.tif in (C.TIF_GTX, C.TIF_GTX_REPRICE) and best is not None and self.crosses(o.side, price, best.price_ticks):
            return C.R_POST_ONLY_WOULD_TAKE
        prices = {p.price_ticks for p in self.resting if p.side == o.side and p is not o}
        if price not in prices and len(prices) >= self.config.max_levels:
            return C.R_TOO_MANY_LEVELS
        return C.OK
