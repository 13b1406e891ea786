"""Targeted tests of the matcher core, run against the pure source and the mypyc build (when fresh)."""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Any

import pytest

from perpline.matcher.loader import compiled_fresh, is_compiled, load_core

IMPLS = ["pure", "compiled"]


@pytest.fixture(params=IMPLS)
def core(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "pure":
        return load_core(pure=True)
    if not compiled_fresh():
        pytest.skip("no fresh compiled core: run `python -m perpline.matcher.build`")
    module = load_core(pure=False)
    assert is_compiled(module)
    return module


class Book:
    """A little driver: ids, timestamps and defaults so each test states only what matters."""

    def __init__(self, core: ModuleType, **config: int) -> None:
        self.c = core
        self.e = core.Engine("BTCUSDT", core.EngineConfig(**config))
        self.next_id = 0
        self.ts_ns = 1_000
        self.last_seq = 0

    def _check(self, events: list[Any]) -> list[Any]:
        for event in events:
            assert event.seq == self.last_seq + 1, "seq must be gap-free"
            self.last_seq = event.seq
        assert self.e.seq == self.last_seq
        self.e.check_invariants()
        return events

    def place(self, side: int, price_ticks: int, qty_lots: int, *, account: int = 1, order_type: int = 1,
              tif: int = 1, stp: int = -1, coid: str = "", order_id: int = 0, reduce_only: bool = False) -> list[Any]:
        if order_id == 0:
            self.next_id += 1
            order_id = self.next_id
        self.ts_ns += 1
        return self._check(self.e.place(order_id, account, side, order_type, tif, price_ticks, qty_lots, stp,
                                        reduce_only, coid, self.ts_ns))

    def buy(self, price_ticks: int, qty_lots: int, **kw: Any) -> list[Any]:
        return self.place(self.c.SIDE_BUY, price_ticks, qty_lots, **kw)

    def sell(self, price_ticks: int, qty_lots: int, **kw: Any) -> list[Any]:
        return self.place(self.c.SIDE_SELL, price_ticks, qty_lots, **kw)

    def cancel(self, order_id: int, account: int = 1, input_id: int = 0) -> list[Any]:
        return self._check(self.e.cancel(order_id, account, self.ts_ns, input_id))

    def amend(self, order_id: int, price_ticks: int, qty_lots: int, account: int = 1, input_id: int = 0) -> list[Any]:
        return self._check(self.e.amend(order_id, account, price_ticks, qty_lots, self.ts_ns, input_id))


def kinds(events: list[Any]) -> list[int]:
    return [e.kind for e in events]


def trades(events: list[Any], core: ModuleType) -> list[tuple[int, int, int]]:
    """(maker_order_id, price_ticks, qty_lots) per trade."""
    return [(e.maker_order_id, e.price_ticks, e.qty_lots) for e in events if e.kind == core.EV_TRADE]


# --- basic order types ---------------------------------------------------------------------------

def test_gtc_limit_rests_and_shows_in_depth(core: ModuleType) -> None:
    b = Book(core)
    events = b.buy(100, 5, coid="c1")
    assert kinds(events) == [core.EV_ACCEPTED, core.EV_RESTED]
    assert events[1].price_ticks == 100 and events[1].leaves_lots == 5 and events[1].client_order_id == "c1"
    b.sell(102, 3)
    b.sell(101, 2)
    assert b.e.best_bid() == 100 and b.e.best_ask() == 101
    assert b.e.depth(10) == ([(100, 5)], [(101, 2), (102, 3)])
    assert b.e.depth(1) == ([(100, 5)], [(101, 2)])
    info = b.e.order(1)
    assert info is not None and (info.price_ticks, info.leaves_lots, info.client_order_id) == (100, 5, "c1")
    assert [o.order_id for o in b.e.open_orders(1)] == [1, 2, 3]
    assert b.e.order(99) is None and b.e.open_orders(7) == []


def test_crossing_limit_price_time_priority_and_rest_of_remainder(core: ModuleType) -> None:
    b = Book(core)
    b.sell(101, 2, account=2)  # id 1
    b.sell(100, 2, account=3)  # id 2: better price
    b.sell(101, 2, account=4)  # id 3: same price as 1, later
    events = b.buy(101, 7)
    assert trades(events, core) == [(2, 100, 2), (1, 101, 2), (3, 101, 2)]
    assert kinds(events)[-1] == core.EV_RESTED and events[-1].leaves_lots == 1
    last_trade = events[-2]
    assert (last_trade.leaves_lots, last_trade.filled_lots, last_trade.maker_leaves_lots) == (1, 6, 0)
    assert [e.trade_id for e in events if e.kind == core.EV_TRADE] == [1, 2, 3]
    assert b.e.depth(5) == ([(101, 1)], [])


def test_ioc_remainder_expires(core: ModuleType) -> None:
    b = Book(core)
    b.sell(100, 2, account=2)
    events = b.buy(100, 5, tif=core.TIF_IOC)
    assert kinds(events) == [core.EV_ACCEPTED, core.EV_TRADE, core.EV_EXPIRED]
    assert events[-1].leaves_lots == 3 and events[-1].code == core.OK
    assert b.e.depth(5) == ([], [])


def test_fok_exact_fill_across_levels(core: ModuleType) -> None:
    b = Book(core)
    b.sell(100, 2, account=2)
    b.sell(101, 3, account=2)
    events = b.buy(101, 5, tif=core.TIF_FOK)
    assert kinds(events) == [core.EV_ACCEPTED, core.EV_TRADE, core.EV_TRADE]
    assert events[-1].leaves_lots == 0 and events[-1].filled_lots == 5


def test_fok_one_lot_short_trades_nothing(core: ModuleType) -> None:
    b = Book(core)
    b.sell(100, 2, account=2)
    b.sell(101, 3, account=2)
    b.sell(102, 9, account=2)  # beyond the FOK limit
    depth_before = b.e.depth(5)
    events = b.buy(101, 6, tif=core.TIF_FOK)
    assert kinds(events) == [core.EV_ACCEPTED, core.EV_EXPIRED]
    assert events[1].code == core.R_FOK_NOT_FILLABLE and events[1].leaves_lots == 6
    assert b.e.depth(5) == depth_before


def test_fok_counts_stp_like_matching(core: ModuleType) -> None:
    b = Book(core)
    b.sell(100, 2, account=1)  # own order first in the queue
    b.sell(100, 5, account=2)
    expire_taker = b.buy(100, 5, tif=core.TIF_FOK, stp=core.STP_EXPIRE_TAKER)
    assert expire_taker[-1].code == core.R_FOK_NOT_FILLABLE
    expire_maker = b.buy(100, 5, tif=core.TIF_FOK, stp=core.STP_EXPIRE_MAKER)
    assert kinds(expire_maker) == [core.EV_ACCEPTED, core.EV_EXPIRED, core.EV_TRADE]
    assert expire_maker[1].order_id == 1 and expire_maker[1].code == core.R_SELF_TRADE


# --- market orders -------------------------------------------------------------------------------

def test_market_buy_stops_at_protection_bound(core: ModuleType) -> None:
    b = Book(core)  # 5%: best ask 100 -> bound 105
    b.sell(100, 1, account=2)
    b.sell(105, 1, account=2)
    b.sell(106, 1, account=2)
    events = b.buy(999_999, 5, order_type=core.TYPE_MARKET, tif=core.TIF_IOC)
    assert kinds(events) == [core.EV_ACCEPTED, core.EV_TRADE, core.EV_TRADE, core.EV_EXPIRED]
    assert events[0].price_ticks == 0, "a market order has no price"
    assert [p for _, p, _ in trades(events, core)] == [100, 105]
    assert events[-1].leaves_lots == 3
    assert b.e.best_ask() == 106


def test_market_sell_bound_rounds_towards_best(core: ModuleType) -> None:
    b = Book(core, market_protection_ppm=10_000)  # 1%: best bid 1999 -> 1979.01 -> bound 1980
    b.buy(1999, 1, account=2)
    b.buy(1980, 1, account=2)
    b.buy(1979, 1, account=2)
    events = b.sell(0, 3, order_type=core.TYPE_MARKET)
    assert [p for _, p, _ in trades(events, core)] == [1999, 1980]
    assert kinds(events)[-1] == core.EV_EXPIRED and events[-1].leaves_lots == 1


def test_market_on_empty_side_is_rejected(core: ModuleType) -> None:
    b = Book(core)
    b.buy(100, 1)
    events = b.buy(0, 1, order_type=core.TYPE_MARKET)
    assert kinds(events) == [core.EV_REJECTED] and events[0].code == core.R_NO_LIQUIDITY
    b.sell(101, 1, account=2)  # the buy now would trade, but a copy of the rejected order is a duplicate
    again = b.buy(0, 1, order_type=core.TYPE_MARKET, order_id=events[0].order_id)
    assert kinds(again) == [core.EV_REJECTED] and again[0].code == core.R_DUPLICATE_ORDER_ID
    bad = b.buy(0, 0, order_type=core.TYPE_MARKET)
    assert bad[0].code == core.R_BAD_QTY
    fixed = b.buy(0, 1, order_type=core.TYPE_MARKET, order_id=bad[0].order_id)
    assert core.EV_REJECTED not in kinds(fixed), "an order refused before the book was asked consumes no id"


def test_market_fok_and_gtx(core: ModuleType) -> None:
    b = Book(core)
    b.sell(100, 2, account=2)
    b.sell(110, 5, account=2)  # beyond the 5% bound
    fok = b.buy(0, 3, order_type=core.TYPE_MARKET, tif=core.TIF_FOK)
    assert fok[-1].code == core.R_FOK_NOT_FILLABLE
    gtx = b.buy(0, 1, order_type=core.TYPE_MARKET, tif=core.TIF_GTX)
    assert gtx[0].code == core.R_BAD_INPUT


# --- post-only -----------------------------------------------------------------------------------

def test_post_only(core: ModuleType) -> None:
    b = Book(core)
    b.sell(101, 1, account=2)
    taking = b.buy(101, 1, tif=core.TIF_GTX)
    assert kinds(taking) == [core.EV_REJECTED] and taking[0].code == core.R_POST_ONLY_WOULD_TAKE
    resting = b.buy(100, 1, tif=core.TIF_GTX)
    assert kinds(resting) == [core.EV_ACCEPTED, core.EV_RESTED]
    crossing_amend = b.amend(resting[0].order_id, 101, 1)
    assert crossing_amend[0].code == core.R_POST_ONLY_WOULD_TAKE


def test_post_only_reprice_moves_inside_the_spread(core: ModuleType) -> None:
    b = Book(core, max_price_ticks=200)
    b.sell(101, 1, account=2)
    b.buy(99, 1, account=2)
    moved = b.buy(105, 3, tif=core.TIF_GTX_REPRICE)
    assert kinds(moved) == [core.EV_ACCEPTED, core.EV_RESTED] and moved[0].price_ticks == 100
    assert b.e.depth(5) == ([(100, 3), (99, 1)], [(101, 1)])
    moved_sell = b.sell(90, 2, tif=core.TIF_GTX_REPRICE)
    assert moved_sell[1].price_ticks == 101 and b.e.depth(5)[1] == [(101, 3)]
    passive = b.buy(98, 1, tif=core.TIF_GTX_REPRICE)
    assert passive[1].price_ticks == 98
    b2 = Book(core, max_price_ticks=100)
    b2.buy(100, 1, account=2)
    nowhere = b2.sell(100, 1, tif=core.TIF_GTX_REPRICE)  # best bid + 1 is above max_price_ticks
    assert kinds(nowhere) == [core.EV_REJECTED] and nowhere[0].code == core.R_POST_ONLY_WOULD_TAKE
    assert b2.buy(100, 1, order_type=core.TYPE_MARKET, tif=core.TIF_GTX_REPRICE)[0].code == core.R_BAD_INPUT


def _commands(core: ModuleType) -> list[Any]:
    C = core.Command
    return [C(core.CMD_PLACE, 1, 1, core.SIDE_SELL, core.TYPE_LIMIT, core.TIF_GTC, 100, 5, core.STP_DEFAULT, False, "a", 1),
            C(core.CMD_PLACE, 2, 2, core.SIDE_BUY, core.TYPE_LIMIT, core.TIF_IOC, 100, 2, ts_ns=2),
            C(core.CMD_AMEND, 1, 1, price_ticks=101, qty_lots=4, ts_ns=3),
            C(core.CMD_CANCEL_BY_CLIENT_ID, 0, 1, client_order_id="a", ts_ns=4),
            C(core.CMD_CANCEL, 9, 1, ts_ns=5),
            C(core.CMD_PLACE, 3, 1, core.SIDE_BUY, core.TYPE_LIMIT, core.TIF_GTC, 99, 1, ts_ns=6),
            C(core.CMD_CANCEL_ALL, 0, 1, ts_ns=7),
            C(99, 4, 1, ts_ns=8)]


def test_step_execute_and_the_list_api_agree(core: ModuleType) -> None:
    """The batch call, the per-call fast path and the list-returning calls give the same events."""
    listed = Book(core)
    e = listed.e
    want = [*e.place(1, 1, core.SIDE_SELL, core.TYPE_LIMIT, core.TIF_GTC, 100, 5, core.STP_DEFAULT, False, "a", 1),
            *e.place(2, 2, core.SIDE_BUY, core.TYPE_LIMIT, core.TIF_IOC, 100, 2, core.STP_DEFAULT, False, "", 2),
            *e.amend(1, 1, 101, 4, 3), *e.cancel_by_client_id(1, "a", 4), *e.cancel(9, 1, 5),
            *e.place(3, 1, core.SIDE_BUY, core.TYPE_LIMIT, core.TIF_GTC, 99, 1, core.STP_DEFAULT, False, "", 6),
            *e.cancel_all(1, 7)]
    want_tuples = [ev.as_tuple() for ev in want] + [(core.EV_REJECTED, len(want) + 1, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                      0, core.R_BAD_INPUT, 8, "", False)]
    batch = core.Engine("BTCUSDT", core.EngineConfig())
    assert [ev.as_tuple() for ev in batch.execute(_commands(core))] == want_tuples
    stepped = core.Engine("BTCUSDT", core.EngineConfig())
    got = []
    for cmd in _commands(core):
        count = stepped.step(cmd)
        assert len(stepped.events()) == count
        got.extend(ev.as_tuple() for ev in stepped.events())
    assert got == want_tuples
    assert batch.state_hash() == stepped.state_hash()
    assert [k for k, *_ in want_tuples] == [1, 2, 1, 3, 7, 2, 4, 6, 1, 2, 4, 6]


# --- self-trade prevention -----------------------------------------------------------------------

def _stp_book(core: ModuleType, **config: int) -> Book:
    b = Book(core, **config)
    b.sell(100, 2, account=1)  # id 1: own
    b.sell(100, 2, account=2)  # id 2: other
    return b


def test_stp_expire_taker(core: ModuleType) -> None:
    b = _stp_book(core)
    events = b.buy(100, 3, stp=core.STP_EXPIRE_TAKER)
    assert kinds(events) == [core.EV_ACCEPTED, core.EV_EXPIRED]
    assert events[1].order_id == 3 and events[1].code == core.R_SELF_TRADE and events[1].leaves_lots == 3
    assert b.e.depth(5) == ([], [(100, 4)]), "maker untouched"


def test_stp_expire_maker(core: ModuleType) -> None:
    b = _stp_book(core)
    events = b.buy(100, 3, stp=core.STP_EXPIRE_MAKER)
    assert kinds(events) == [core.EV_ACCEPTED, core.EV_EXPIRED, core.EV_TRADE, core.EV_RESTED]
    assert events[1].order_id == 1 and events[1].code == core.R_SELF_TRADE and events[1].leaves_lots == 2
    assert events[2].maker_order_id == 2 and events[2].qty_lots == 2
    assert b.e.depth(5) == ([(100, 1)], [])


def test_stp_expire_both(core: ModuleType) -> None:
    b = _stp_book(core)
    events = b.buy(100, 3, stp=core.STP_EXPIRE_BOTH)
    assert kinds(events) == [core.EV_ACCEPTED, core.EV_EXPIRED, core.EV_EXPIRED]
    assert [e.order_id for e in events[1:]] == [1, 3]
    assert all(e.code == core.R_SELF_TRADE for e in events[1:])
    assert b.e.depth(5) == ([], [(100, 2)])


def test_stp_none_trades_with_itself(core: ModuleType) -> None:
    b = _stp_book(core)
    events = b.buy(100, 3, stp=core.STP_NONE)
    assert trades(events, core) == [(1, 100, 2), (2, 100, 1)]
    assert events[1].account_id == events[1].maker_account_id == 1


def test_stp_default_comes_from_config(core: ModuleType) -> None:
    b = _stp_book(core, default_stp=core.STP_EXPIRE_MAKER)
    events = b.buy(100, 1)  # stp=-1 (STP_DEFAULT)
    assert kinds(events) == [core.EV_ACCEPTED, core.EV_EXPIRED, core.EV_TRADE]
    assert b.e.order(3) is None
    b2 = _stp_book(core)  # default config: EXPIRE_TAKER
    assert b2.buy(100, 1)[-1].code == core.R_SELF_TRADE


# --- cancel and amend ----------------------------------------------------------------------------

def test_cancel_paths(core: ModuleType) -> None:
    b = Book(core)
    b.buy(100, 5, coid="x")
    assert b.cancel(1, account=2)[0].code == core.R_NOT_OWNER
    assert b.cancel(42)[0].code == core.R_UNKNOWN_ORDER
    done = b.cancel(1)
    assert kinds(done) == [core.EV_CANCELLED] and done[0].leaves_lots == 5
    assert b.cancel(1)[0].code == core.R_UNKNOWN_ORDER
    b.buy(100, 5, coid="x")  # the client id is free again once the order is gone
    assert b._check(b.e.cancel_by_client_id(2, "x", 1))[0].code == core.R_UNKNOWN_ORDER
    by_client = b._check(b.e.cancel_by_client_id(1, "x", 1))
    assert kinds(by_client) == [core.EV_CANCELLED] and by_client[0].order_id == 2


def test_cancel_all_ascending_and_empty(core: ModuleType) -> None:
    b = Book(core)
    b.sell(105, 1, account=1)
    b.buy(90, 1, account=2)
    b.buy(95, 1, account=1)
    b.sell(101, 1, account=1)
    events = b._check(b.e.cancel_all(1, 5))
    assert [(e.kind, e.order_id) for e in events] == [(core.EV_CANCELLED, 1), (core.EV_CANCELLED, 3),
                                                      (core.EV_CANCELLED, 4)]
    assert b._check(b.e.cancel_all(1, 6)) == []
    assert b.e.depth(5) == ([(90, 1)], [])


def test_duplicate_live_client_order_id_is_bad_input(core: ModuleType) -> None:
    b = Book(core)
    b.buy(100, 1, coid="same")
    assert b.buy(99, 1, coid="same")[0].code == core.R_BAD_INPUT
    assert kinds(b.buy(99, 1, coid="same", account=2)) == [core.EV_ACCEPTED, core.EV_RESTED]


def test_amend_qty_down_keeps_priority(core: ModuleType) -> None:
    b = Book(core)
    b.sell(100, 5, account=1)
    b.sell(100, 5, account=2)
    events = b.amend(1, 100, 3)
    assert kinds(events) == [core.EV_AMENDED] and events[0].leaves_lots == 3 and events[0].qty_lots == 3
    assert b.e.depth(1) == ([], [(100, 8)])
    assert trades(b.buy(100, 1, account=3), core) == [(1, 100, 1)]


def test_amend_qty_up_loses_priority(core: ModuleType) -> None:
    b = Book(core)
    b.sell(100, 5, account=1)
    b.sell(100, 5, account=2)
    events = b.amend(1, 100, 6)
    assert kinds(events) == [core.EV_AMENDED, core.EV_RESTED]
    assert trades(b.buy(100, 1, account=3), core) == [(2, 100, 1)]


def test_amend_price_change_may_match(core: ModuleType) -> None:
    b = Book(core)
    b.sell(101, 2, account=2)  # 1
    b.buy(99, 5, account=1)  # 2
    events = b.amend(2, 101, 5)
    assert kinds(events) == [core.EV_AMENDED, core.EV_TRADE, core.EV_RESTED]
    assert events[1].order_id == 2 and events[1].maker_order_id == 1
    assert b.e.depth(5) == ([(101, 3)], [])


def test_amend_rejections(core: ModuleType) -> None:
    b = Book(core)
    b.sell(100, 2, account=2)
    b.buy(99, 5)  # 2
    b.sell(99, 3, account=2)  # fills 3 of order 2
    assert b.amend(2, 99, 3)[0].code == core.R_BAD_QTY, "new qty <= filled"
    assert b.amend(2, 0, 5)[0].code == core.R_BAD_PRICE
    assert b.amend(2, 99, 5, account=9)[0].code == core.R_NOT_OWNER
    assert b.amend(77, 99, 5)[0].code == core.R_UNKNOWN_ORDER
    ok = b.amend(2, 99, 4)
    assert kinds(ok) == [core.EV_AMENDED] and ok[0].leaves_lots == 1 and ok[0].filled_lots == 3


def test_amend_full_fill_removes_order(core: ModuleType) -> None:
    b = Book(core)
    b.sell(101, 5, account=2)
    b.buy(99, 2, coid="k")
    events = b.amend(2, 101, 2)
    assert kinds(events) == [core.EV_AMENDED, core.EV_TRADE]
    assert b.e.order(2) is None and b.e.open_orders(1) == []
    assert kinds(b.buy(90, 1, coid="k")) == [core.EV_ACCEPTED, core.EV_RESTED]


# --- limits and rejections -----------------------------------------------------------------------

def test_input_validation_codes(core: ModuleType) -> None:
    b = Book(core, max_price_ticks=1000, max_qty_lots=50)
    assert b.buy(0, 1)[0].code == core.R_BAD_PRICE
    assert b.buy(1001, 1)[0].code == core.R_BAD_PRICE
    assert b.buy(100, 0)[0].code == core.R_BAD_QTY
    assert b.buy(100, 51)[0].code == core.R_BAD_QTY
    assert b.place(3, 100, 1)[0].code == core.R_BAD_INPUT
    assert b.buy(100, 1, tif=9)[0].code == core.R_BAD_INPUT
    assert b.buy(100, 1, stp=7)[0].code == core.R_BAD_INPUT
    assert b.buy(100, 1, order_type=5)[0].code == core.R_BAD_INPUT
    assert b.buy(100, 1, account=0)[0].code == core.R_BAD_INPUT
    assert b.buy(100, 1, order_id=-4)[0].code == core.R_BAD_INPUT
    assert b.buy(100, 1, order_id=1 << 63)[0].code == core.R_BAD_INPUT
    assert b.buy(100, 1, coid="x" * 65)[0].code == core.R_BAD_INPUT
    assert b.e.order_count() == 0 and b.e.seq == 12


def test_duplicate_order_ids(core: ModuleType) -> None:
    b = Book(core, max_seen_ids=2)
    b.buy(100, 1, order_id=10)
    assert b.buy(100, 1, order_id=10)[0].code == core.R_DUPLICATE_ORDER_ID, "live"
    b.sell(100, 1, order_id=11, account=2)  # fills 10
    assert b.buy(100, 1, order_id=10)[0].code == core.R_DUPLICATE_ORDER_ID, "finished, remembered"
    b.buy(50, 1, order_id=12)  # seen window of 2: forgets 10
    assert kinds(b.buy(100, 1, order_id=10)) == [core.EV_ACCEPTED, core.EV_RESTED], "forgotten"
    b.buy(51, 1, order_id=13)
    b.buy(52, 1, order_id=14)  # 12 falls out of the window but is still live
    assert b.buy(100, 1, order_id=12)[0].code == core.R_DUPLICATE_ORDER_ID, "live ids always"


# --- copies of cancels and amends (redelivered, or records of an aborted transaction) -------------

def _terms(b: Book, order_id: int) -> tuple[int, int, int]:
    info = b.e.order(order_id)
    assert info is not None
    return info.price_ticks, info.qty_lots, info.leaves_lots


def test_duplicated_cancel_emits_nothing(core: ModuleType) -> None:
    b = Book(core)
    b.buy(100, 5)
    assert kinds(b.cancel(1, input_id=7)) == [core.EV_CANCELLED]
    seq = b.e.seq
    assert b.cancel(1, input_id=7) == [] and b.e.seq == seq  # the copy: no CancelRejected, no seq
    assert [e.code for e in b.cancel(1, input_id=8)] == [core.R_UNKNOWN_ORDER]  # another request is answered
    assert b.cancel(1, input_id=8) == []  # and its copy is not, even though the first was refused


def test_duplicated_amend_applies_once(core: ModuleType) -> None:
    b = Book(core)
    b.buy(100, 5)
    b.sell(103, 1, account=2)
    assert kinds(b.amend(1, 101, 6, input_id=9)) == [core.EV_AMENDED, core.EV_RESTED]
    hash_after_first = b.e.state_hash()
    assert b.amend(1, 101, 6, input_id=9) == []
    assert _terms(b, 1) == (101, 6, 6)
    b2 = Book(core)
    b2.buy(100, 5)
    b2.sell(103, 1, account=2)
    b2.amend(1, 101, 6, input_id=9)
    assert b2.e.state_hash() == hash_after_first  # the copy left no trace but the memory of the first


def test_replayed_amend_after_a_later_amend_keeps_the_later_terms(core: ModuleType) -> None:
    b = Book(core)
    b.buy(100, 5)
    assert kinds(b.amend(1, 101, 6, input_id=11)) == [core.EV_AMENDED, core.EV_RESTED]  # amend A
    assert kinds(b.amend(1, 99, 4, input_id=12)) == [core.EV_AMENDED, core.EV_RESTED]  # amend B
    assert b.amend(1, 101, 6, input_id=11) == []  # a copy of A after B
    assert _terms(b, 1) == (99, 4, 4)
    assert b.e.depth(5) == ([(99, 4)], [])


def test_step_and_execute_skip_copies(core: ModuleType) -> None:
    b = Book(core)
    b.buy(100, 5)
    c = core
    amend = c.Command(c.CMD_AMEND, 1, 1, price_ticks=101, qty_lots=5, ts_ns=5, input_id=3)
    back = c.Command(c.CMD_AMEND, 1, 1, price_ticks=100, qty_lots=5, ts_ns=6, input_id=4)
    events = b.e.execute([amend, back, amend])
    assert [e.kind for e in events] == [c.EV_AMENDED, c.EV_RESTED, c.EV_AMENDED, c.EV_RESTED]
    assert list(b.e.ends) == [2, 4, 4]
    assert b.e.step(c.Command(c.CMD_CANCEL, 1, 1, ts_ns=7, input_id=3)) == 0  # identity 3 is taken
    assert _terms(b, 1) == (100, 5, 5)


def test_input_ids_are_bounded_and_checked(core: ModuleType) -> None:
    b = Book(core, max_seen_ids=2)
    b.buy(100, 5)
    for input_id, qty in ((1, 6), (2, 7), (3, 8)):
        assert kinds(b.amend(1, 100, qty, input_id=input_id)) == [core.EV_AMENDED, core.EV_RESTED]
    assert kinds(b.amend(1, 100, 6, input_id=1)) == [core.EV_AMENDED]  # window of 2: identity 1 forgotten
    assert b.amend(1, 100, 6, input_id=3) == []
    assert [e.code for e in b.cancel(1, input_id=-5)] == [core.R_BAD_INPUT]
    assert _terms(b, 1) == (100, 6, 6)


def test_snapshot_keeps_the_applied_identities(core: ModuleType) -> None:
    b = Book(core)
    b.buy(100, 5)
    b.amend(1, 101, 6, input_id=11)
    b.amend(1, 99, 4, input_id=12)
    restored = core.Engine.from_snapshot(b.e.to_snapshot())
    assert restored.state_hash() == b.e.state_hash()
    assert restored.amend(1, 1, 101, 6, 50, 11) == [] and restored.order(1).price_ticks == 99
    assert b.e.state_hash() != _hash_without_identities(core, b)  # the identities are part of the state


def _hash_without_identities(core: ModuleType, b: Book) -> str:
    """The same book rebuilt from a version-2 snapshot (no identities: still readable)."""
    data = b.e.to_snapshot()
    assert data[-4 - 8 * 2:-8 * 2] == struct.pack("<I", 2)
    v2 = data[:4] + struct.pack("<H", 2) + data[6:-4 - 8 * 2]
    engine = core.Engine.from_snapshot(v2)
    assert engine.depth(5) == b.e.depth(5)
    assert len(engine.applied.ids) == 0
    return str(engine.state_hash())


def test_book_full_and_per_account_limit(core: ModuleType) -> None:
    b = Book(core, max_orders=3, max_open_per_account=2)
    b.buy(100, 1)
    b.buy(99, 1)
    assert b.buy(98, 1)[0].code == core.R_BOOK_FULL, "per account"
    b.buy(98, 1, account=2)
    assert b.buy(97, 1, account=3)[0].code == core.R_BOOK_FULL, "whole book"
    b.sell(101, 1, account=3, tif=core.TIF_IOC)  # IOC never rests: not limited
    assert b.e.order_count() == 3


def test_too_many_levels(core: ModuleType) -> None:
    b = Book(core, max_levels=2)
    b.buy(100, 1)
    b.buy(99, 1)
    assert b.buy(98, 1)[0].code == core.R_TOO_MANY_LEVELS
    assert kinds(b.buy(99, 1)) == [core.EV_ACCEPTED, core.EV_RESTED], "existing level"
    b.sell(200, 1, account=2)  # the ask side has its own limit
    assert b.amend(2, 97, 1)[0].code == core.R_TOO_MANY_LEVELS, "level 99 stays (order 4)"
    solo = b.buy(101, 1)
    assert solo[0].code == core.R_TOO_MANY_LEVELS


def test_amend_level_limit_counts_the_level_it_leaves(core: ModuleType) -> None:
    b = Book(core, max_levels=2)
    b.buy(100, 1)
    b.buy(99, 1)
    assert kinds(b.amend(2, 98, 1)) == [core.EV_AMENDED, core.EV_RESTED]


def test_event_budget_expires_remainder_instead_of_resting(core: ModuleType) -> None:
    b = Book(core, max_events_per_input=5)
    for account in range(2, 8):
        b.sell(100, 1, account=account)
    events = b.buy(100, 10)
    assert len(events) == 5
    assert kinds(events) == [core.EV_ACCEPTED] + [core.EV_TRADE] * 3 + [core.EV_EXPIRED]
    assert events[-1].code == core.R_TOO_MANY_EVENTS and events[-1].leaves_lots == 7
    assert b.e.depth(5) == ([], [(100, 3)]), "a crossing remainder never rests"


def test_event_budget_fok_is_all_or_nothing(core: ModuleType) -> None:
    b = Book(core, max_events_per_input=5)
    for _ in range(4):
        b.sell(100, 1, account=2)
    events = b.buy(100, 4, tif=core.TIF_FOK)
    assert kinds(events) == [core.EV_ACCEPTED, core.EV_EXPIRED] and events[1].code == core.R_TOO_MANY_EVENTS
    assert b.e.depth(5) == ([], [(100, 4)])
    fills = b.buy(100, 3, tif=core.TIF_FOK)
    assert kinds(fills) == [core.EV_ACCEPTED] + [core.EV_TRADE] * 3


def test_event_budget_applies_to_stp_both(core: ModuleType) -> None:
    b = Book(core, max_events_per_input=4)
    b.sell(100, 1, account=2)
    b.sell(100, 1, account=2)
    b.sell(100, 1, account=1)
    events = b.buy(100, 5, stp=core.STP_EXPIRE_BOTH)
    assert len(events) <= 4 and events[-1].code == core.R_TOO_MANY_EVENTS


def test_config_limits_are_asserted(core: ModuleType) -> None:
    with pytest.raises(AssertionError):
        core.EngineConfig(max_events_per_input=2)
    with pytest.raises(AssertionError):
        core.EngineConfig(max_events_per_input=10, max_open_per_account=11)
    with pytest.raises(AssertionError):
        core.EngineConfig(default_stp=core.STP_DEFAULT)


# --- determinism, replay, snapshots --------------------------------------------------------------

def _script(b: Book) -> None:
    c = b.c
    b.sell(101, 3, account=2, coid="a")
    b.sell(102, 4, account=3)
    b.buy(99, 2, account=1, coid="b")
    b.buy(101, 5, account=1, tif=c.TIF_IOC)
    b.amend(3, 100, 4)
    b.sell(0, 1, account=2, order_type=c.TYPE_MARKET)
    b.buy(98, 7, account=3, tif=c.TIF_GTX, reduce_only=True)
    b.cancel(2, account=3)


def test_replay_gives_same_events_and_hash(core: ModuleType) -> None:
    one, two = Book(core), Book(core)
    _script(one)
    _script(two)
    assert one.e.state_hash() == two.e.state_hash()
    assert len(one.e.state_hash()) == 64


def test_state_hash_sees_priority_and_counters(core: ModuleType) -> None:
    one, two = Book(core), Book(core)
    one.buy(100, 1, account=1)
    one.buy(100, 1, account=2)
    two.buy(100, 1, account=2, order_id=2)
    two.buy(100, 1, account=1, order_id=1)
    assert one.e.depth(5) == two.e.depth(5)
    assert one.e.state_hash() != two.e.state_hash()


def test_snapshot_round_trip_keeps_hash_and_behaviour(core: ModuleType) -> None:
    b = Book(core, max_events_per_input=50, max_levels=7)
    _script(b)
    data = b.e.to_snapshot()
    restored = core.Engine.from_snapshot(data)
    assert restored.state_hash() == b.e.state_hash()
    assert restored.to_snapshot() == data
    assert restored.seq == b.e.seq and restored.config.max_levels == 7
    assert core.from_snapshot(data).state_hash() == b.e.state_hash()
    after_original = [e.as_tuple() for e in b.e.place(50, 9, core.SIDE_SELL, 1, 1, 98, 20, -1, False, "", 9)]
    after_restored = [e.as_tuple() for e in restored.place(50, 9, core.SIDE_SELL, 1, 1, 98, 20, -1, False, "", 9)]
    assert after_original == after_restored
    assert restored.place(1, 1, 1, 1, 1, 100, 1, -1, False, "", 10)[0].code == core.R_DUPLICATE_ORDER_ID


def test_snapshot_rejects_garbage(core: ModuleType) -> None:
    b = Book(core)
    _script(b)
    data = b.e.to_snapshot()
    for bad in (b"", b"nope" + data[4:], data[:-3], data + b"x"):
        with pytest.raises(ValueError):
            core.Engine.from_snapshot(bad)


def test_pure_and_compiled_agree() -> None:
    if not compiled_fresh():
        pytest.skip("no fresh compiled core")
    pure, compiled = Book(load_core(pure=True)), Book(load_core(pure=False))
    _script(pure)
    _script(compiled)
    assert pure.e.to_snapshot() == compiled.e.to_snapshot()
