"""The accounts domain without a broker: deposits, freezes, fills, fees, PnL, idempotency."""

from __future__ import annotations

from perpline.accounts.handlers import handle
from perpline.accounts.ledger import journal_sum
from perpline.accounts.state import AccountState, from_store, to_store
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.contracts.units import parse_amount

META = {"trace_id": "t1", "causation_id": "c1", "ts_ms": 1}
SYM = "BTCUSDT-PERP"


def deposit(state: AccountState, amount: str, rid: str = "d1") -> list:
    return handle(state, m.Deposit(**META, request_id=rid, account_id=state.account_id, asset="USDT", amount=amount))


def place(state: AccountState, side: str, price: str, qty: str, cid: str, rid: str | None = None) -> list:
    return handle(state, m.PlaceOrder(**META, request_id=rid or cid, account_id=state.account_id, symbol=SYM, side=side,
                                      order_type="LIMIT", price=price, quantity=qty, client_order_id=cid))


def leg(state: AccountState, order_id: int, seq: int, liq: str, side: str, price: str, qty: str, leaves: str) -> list:
    return handle(state, m.FillLeg(**META, account_id=state.account_id, symbol=SYM, seq=seq, trade_id=seq, order_id=order_id,
                                   liquidity=liq, side=side, price=price, quantity=qty, order_leaves=leaves))


def journals(outs: list) -> list[m.Journal]:
    return [o.msg for o in outs if isinstance(o.msg, m.Journal)]


def result(outs: list) -> m.CommandResult:
    return next(o.msg for o in outs if isinstance(o.msg, m.CommandResult))


def test_deposit_credits_and_journals_balance() -> None:
    st = AccountState(account_id=7)
    outs = deposit(st, "1000.5")
    assert st.balances["USDT"].available == parse_amount("1000.5")
    (j,) = journals(outs)
    assert j.ref_type == "DEPOSIT" and journal_sum(j) == 0
    assert {p.ledger_account for p in j.postings} == {"platform:HOT_WALLET", "user:7:SPOT"}


def test_resent_deposit_changes_nothing() -> None:
    st = AccountState(account_id=7)
    deposit(st, "10")
    outs = deposit(st, "10")
    assert st.balances["USDT"].available == parse_amount("10")
    assert journals(outs) == [] and result(outs).ok


def test_bad_amounts_are_refused_and_change_nothing() -> None:
    st = AccountState(account_id=7)
    for bad in ("-1", "0", "1e3", "NaN", "0.000000001", "inf", "1" * 40):
        outs = deposit(st, bad, rid=f"r{bad}")
        assert not result(outs).ok, bad
    assert st.balances == {}


def test_place_freezes_margin_and_taker_fee() -> None:
    st = AccountState(account_id=1)
    deposit(st, "1000")
    outs = place(st, "BUY", "50000", "0.010", "c1")
    r = result(outs)
    assert r.ok and r.order_id
    # notional 500 USDT, leverage 20 -> 25 margin, taker fee 0.05% -> 0.25
    bal = st.balances["USDT"]
    assert bal.order_margin == parse_amount("25.25")
    assert bal.available == parse_amount("974.75")
    new_orders = [o.msg for o in outs if isinstance(o.msg, m.NewOrder)]
    assert len(new_orders) == 1 and new_orders[0].price == "50000.00"


def test_resent_client_order_id_returns_the_same_order() -> None:
    st = AccountState(account_id=1)
    deposit(st, "1000")
    first = result(place(st, "BUY", "50000", "0.010", "c1", rid="r1"))
    again = place(st, "BUY", "50000", "0.010", "c1", rid="r2")
    assert result(again).order_id == first.order_id
    assert not [o for o in again if isinstance(o.msg, m.NewOrder)]
    assert len(st.orders) == 1


def test_insufficient_balance_and_filters() -> None:
    st = AccountState(account_id=1)
    deposit(st, "10")
    assert result(place(st, "BUY", "50000", "0.010", "a")).code == Code.INSUFFICIENT_BALANCE
    assert result(place(st, "BUY", "50000.05", "0.010", "b")).code == Code.PRICE_NOT_ON_TICK
    assert result(place(st, "BUY", "50000", "0.0005", "c")).code == Code.TOO_PRECISE
    assert result(place(st, "BUY", "50000", "0.001", "d")).code == Code.NOTIONAL_TOO_SMALL
    assert st.balances["USDT"].order_margin == 0 and not st.orders


def test_trade_settles_both_sides_with_fees_and_zero_sum_journals() -> None:
    buyer, seller = AccountState(account_id=1), AccountState(account_id=2)
    deposit(buyer, "1000")
    deposit(seller, "1000")
    b_id = result(place(seller, "SELL", "50000", "0.010", "s1")).order_id  # maker
    t_id = result(place(buyer, "BUY", "50100", "0.010", "b1")).order_id  # taker, fills at the maker's price
    outs = leg(seller, b_id, 5, "MAKER", "SELL", "50000.00", "0.010", "0") + leg(buyer, t_id, 5, "TAKER", "BUY", "50000.00", "0.010", "0")
    assert all(journal_sum(j) == 0 for j in journals(outs))
    fees = {j.account_id: j for j in journals(outs) if j.ref_type == "TRADE_FEE"}
    assert fees[2].postings[0].amount == "0.10000000"  # maker 0.02 % of 500
    assert fees[1].postings[0].amount == "0.25000000"  # taker 0.05 % of 500
    assert buyer.positions[SYM].size_lots == 10 and seller.positions[SYM].size_lots == -10
    for st, fee in ((buyer, "0.25"), (seller, "0.1")):
        bal = st.balances["USDT"]
        assert bal.order_margin == 0 and bal.position_margin == parse_amount("25")
        assert bal.available == parse_amount("1000") - parse_amount("25") - parse_amount(fee)
        assert not st.orders
    # a replayed leg changes nothing
    assert leg(buyer, t_id, 5, "TAKER", "BUY", "50000.00", "0.010", "0") == []


def test_close_realises_pnl_and_releases_margin() -> None:
    st = AccountState(account_id=1)
    deposit(st, "1000")
    o1 = result(place(st, "BUY", "50000", "0.010", "o1")).order_id
    leg(st, o1, 1, "MAKER", "BUY", "50000.00", "0.010", "0")
    o2 = result(place(st, "SELL", "51000", "0.015", "o2")).order_id  # flips to short 0.005
    outs = leg(st, o2, 2, "MAKER", "SELL", "51000.00", "0.015", "0")
    pnl = [j for j in journals(outs) if j.ref_type == "POSITION_REALIZED_PNL"]
    assert len(pnl) == 1 and journal_sum(pnl[0]) == 0
    pos = st.positions[SYM]
    assert pos.size_lots == -5 and pos.realized_pnl == parse_amount("10")  # (51000-50000) * 0.010
    assert pos.margin == parse_amount("12.75")  # 255 / 20


def test_state_round_trips_through_the_store() -> None:
    st = AccountState(account_id=3)
    deposit(st, "1000")
    place(st, "BUY", "50000", "0.010", "x")
    again = from_store(to_store(st))
    assert again == st


def test_cancel_all_asks_the_matcher_for_each_open_order_of_the_symbol() -> None:
    st = AccountState(account_id=1)
    deposit(st, "10000")
    ids = [result(place(st, "BUY", "50000", "0.010", f"c{i}")).order_id for i in range(3)]
    outs = handle(st, m.CancelAll(**META, request_id="ca", account_id=1, symbol=SYM))
    cancels = [o.msg for o in outs if isinstance(o.msg, m.CancelRequest)]
    assert sorted(c.order_id for c in cancels) == sorted(ids) and all(o.key == SYM for o in outs if o.topic == "orders")
    assert result(outs).order_ids == sorted(ids)
    assert st.balances["USDT"].order_margin > 0  # released only when the matcher confirms each cancel
    again = handle(st, m.CancelAll(**META, request_id="ca", account_id=1, symbol=SYM))
    assert not [o for o in again if isinstance(o.msg, m.CancelRequest)]  # a resend asks nothing twice


def place_with(state: AccountState, cid: str, **fields: object) -> list:
    body = {"side": "BUY", "order_type": "LIMIT", "price": None, "quantity": "0.010", **fields}
    return handle(state, m.PlaceOrder(**META, request_id=cid, account_id=state.account_id, symbol=SYM,
                                      client_order_id=cid, **body))  # type: ignore[arg-type]


def sent_orders(outs: list) -> list[m.NewOrder]:
    return [o.msg for o in outs if isinstance(o.msg, m.NewOrder)]


def test_market_order_reserves_at_its_bound_and_reaches_the_matcher_as_ioc() -> None:
    st = AccountState(account_id=1)
    deposit(st, "1000")
    outs = place_with(st, "m1", order_type="MARKET", price_bound="52500")
    assert result(outs).ok
    (sent,) = sent_orders(outs)
    assert (sent.order_type, sent.time_in_force, sent.price) == ("LIMIT", "IOC", "52500.00")
    assert st.balances["USDT"].order_margin == parse_amount("26.25") + parse_amount("0.2625")  # 525/20 + 0.05%
    fok = sent_orders(place_with(st, "m2", order_type="MARKET", time_in_force="FOK", price_bound="52500"))
    assert fok[0].time_in_force == "FOK"
    assert st.orders[result(place_with(st, "m3", order_type="MARKET", price_bound="52500")).order_id].order_type == "MARKET"


def test_market_order_rejections_change_nothing() -> None:
    st = AccountState(account_id=1)
    deposit(st, "1000")
    cases = {"n1": ({"order_type": "MARKET"}, Code.NO_LIQUIDITY),
             "n2": ({"order_type": "MARKET", "price_bound": "50000", "price": "50000"}, Code.MALFORMED),
             "n3": ({"order_type": "MARKET", "price_bound": "50000", "time_in_force": "GTX"}, Code.BAD_TIME_IN_FORCE),
             "n4": ({"order_type": "MARKET", "price_bound": "50000.05"}, Code.PRICE_NOT_ON_TICK)}
    for cid, (fields, code) in cases.items():
        r = result(place_with(st, cid, **fields))
        assert not r.ok and r.code == code, cid
    assert st.orders == {} and st.balances["USDT"].available == parse_amount("1000")


def _long(st: AccountState, qty: str = "0.020") -> None:
    deposit(st, "10000")
    order_id = result(place(st, "BUY", "50000", qty, "open")).order_id
    leg(st, order_id, 1, "TAKER", "BUY", "50000", qty, "0")


def test_reduce_only_needs_an_opposite_position_and_freezes_only_the_fee() -> None:
    st = AccountState(account_id=1)
    deposit(st, "1000")
    r = result(place_with(st, "r0", side="SELL", price="50000", reduce_only=True))
    assert not r.ok and r.code == Code.REDUCE_ONLY_REJECTED
    st = AccountState(account_id=1)
    _long(st)
    before = st.balances["USDT"].order_margin
    ok = place_with(st, "r1", side="SELL", price="51000", quantity="0.015", reduce_only=True)
    assert result(ok).ok and sent_orders(ok)[0].reduce_only
    assert st.balances["USDT"].order_margin - before == parse_amount("0.3825")  # fee only: 765 * 0.05%
    small = result(place_with(st, "r3", side="SELL", price="51000", quantity="0.002", reduce_only=True))
    assert small.ok  # below min notional is fine for reduce-only
    same_side = result(place_with(st, "r4", side="BUY", price="49000", quantity="0.001", reduce_only=True))
    assert not same_side.ok and same_side.code == Code.REDUCE_ONLY_REJECTED


def test_an_oversized_resting_reduce_only_order_rests_with_what_it_can_close() -> None:
    """Binance: a reduce-only order larger than the position is accepted and reduced to it; refused
    (-2022) only when it can close nothing."""
    st = AccountState(account_id=1)
    _long(st)
    first = place_with(st, "r1", side="SELL", price="51000", quantity="0.015", reduce_only=True)
    over = place_with(st, "r2", side="SELL", price="51000", quantity="0.010", reduce_only=True)
    assert result(over).ok and sent_orders(over)[0].quantity == "0.005"  # 0.015 of 0.020 already covered
    view = next(o.msg.order for o in over if isinstance(o.msg, m.OrderChanged))
    assert view.quantity == "0.005" and result(first).ok
    none_left = result(place_with(st, "r3", side="SELL", price="51000", quantity="0.001", reduce_only=True))
    assert not none_left.ok and none_left.code == Code.REDUCE_ONLY_REJECTED
    assert sum(o.leaves_lots for o in st.orders.values() if o.reduce_only) == 20


def test_an_oversized_reduce_only_market_order_closes_the_position_and_expires_the_rest() -> None:
    st = AccountState(account_id=1)
    _long(st)
    outs = place_with(st, "close", side="SELL", order_type="MARKET", price_bound="47500", quantity="1.000",
                      reduce_only=True)
    order_id = result(outs).order_id
    assert sent_orders(outs)[0].quantity == "0.020"  # the matcher never sees the excess
    assert st.balances["USDT"].order_margin == parse_amount("0.475")  # the fee of 0.020 at the bound only
    fill = leg(st, order_id, 2, "TAKER", "SELL", "50000", "0.020", "0")
    view = [o.msg.order for o in fill if isinstance(o.msg, m.OrderChanged)][-1]
    assert (view.status, view.quantity, view.filled) == ("EXPIRED", "1.000", "0.020")
    assert st.positions[SYM].size_lots == 0 and st.orders == {} and st.balances["USDT"].order_margin == 0


def test_reduce_only_orders_are_cut_when_the_position_shrinks() -> None:
    st = AccountState(account_id=1)
    _long(st)
    r_old = result(place_with(st, "r1", side="SELL", price="52000", quantity="0.010", reduce_only=True)).order_id
    r_new = result(place_with(st, "r2", side="SELL", price="53000", quantity="0.010", reduce_only=True)).order_id
    plain = result(place(st, "SELL", "50000", "0.015", "plain")).order_id
    outs = leg(st, plain, 2, "TAKER", "SELL", "50000", "0.015", "0")
    cancels = [o.msg.order_id for o in outs if isinstance(o.msg, m.CancelRequest)]
    assert cancels == [r_new, r_old]  # position 0.005 left: both exceed it together, the newest first
    assert st.positions[SYM].size_lots == 5
    again = leg(st, plain, 2, "TAKER", "SELL", "50000", "0.015", "0")  # a re-delivered leg: nothing new
    assert [o for o in again if isinstance(o.msg, m.CancelRequest)] == []


def amend(state: AccountState, rid: str, order_id: int, quantity: str, price: str | None = None) -> list:
    return handle(state, m.AmendOrder(**META, request_id=rid, account_id=state.account_id, symbol=SYM,
                                      order_id=order_id, price=price, quantity=quantity))


def amend_done(state: AccountState, seq: int, order_id: int, ok: bool, price: str = "", qty: str = "",
               leaves: str = "", code: int = 0) -> list:
    return handle(state, m.AmendDone(**META, account_id=state.account_id, symbol=SYM, seq=seq, order_id=order_id,
                                     ok=ok, price=price, quantity=qty, leaves=leaves, code=code))


def test_amend_up_freezes_more_first_then_holds_exactly_what_the_new_terms_need() -> None:
    st = AccountState(account_id=1)
    deposit(st, "1000")
    order_id = result(place(st, "BUY", "50000", "0.010", "c1")).order_id
    assert st.balances["USDT"].order_margin == parse_amount("25.25")
    outs = amend(st, "a1", order_id, "0.020", "51000")
    assert result(outs).ok
    (sent,) = [o.msg for o in outs if isinstance(o.msg, m.AmendRequest)]
    assert (sent.price, sent.quantity) == ("51000.00", "0.020")
    assert st.balances["USDT"].order_margin == parse_amount("51.51")  # 1020 / 20 + 0.05 %, frozen up front
    busy = result(amend(st, "a2", order_id, "0.030"))
    assert not busy.ok  # one amend at a time
    outs = amend_done(st, 5, order_id, True, "51000.00", "0.020", "0.020")
    assert st.orders[order_id].price_ticks == 510000 and st.orders[order_id].qty_lots == 20
    assert st.balances["USDT"].order_margin == parse_amount("51.51")
    assert all(journal_sum(j) == 0 for j in journals(outs))
    again = amend_done(st, 5, order_id, True, "51000.00", "0.020", "0.020")  # redelivered: nothing
    assert journals(again) == []


def test_amend_down_releases_when_the_matcher_confirms_and_a_refusal_restores_the_old_terms() -> None:
    st = AccountState(account_id=1)
    deposit(st, "1000")
    order_id = result(place(st, "BUY", "50000", "0.010", "c1")).order_id
    assert result(amend(st, "a1", order_id, "0.004")).ok
    assert st.balances["USDT"].order_margin == parse_amount("25.25")  # nothing released before the matcher agrees
    amend_done(st, 3, order_id, True, "50000.00", "0.004", "0.004")
    assert st.balances["USDT"].order_margin == parse_amount("10.1")
    assert result(amend(st, "a2", order_id, "0.010", "52000")).ok
    assert st.balances["USDT"].order_margin == parse_amount("26.26")
    amend_done(st, 4, order_id, False, code=3005)
    assert st.balances["USDT"].order_margin == parse_amount("10.1") and st.orders[order_id].qty_lots == 4
    assert st.balances["USDT"].available == parse_amount("989.9")


def test_amend_refusals_change_nothing() -> None:
    st = AccountState(account_id=1)
    deposit(st, "100")
    order_id = result(place(st, "BUY", "50000", "0.010", "c1")).order_id
    before = (st.balances["USDT"].available, st.balances["USDT"].order_margin)
    for rid, (oid, qty, price, code) in {"b1": (order_id, "1.000", None, Code.INSUFFICIENT_BALANCE),
                                         "b2": (999, "0.010", None, Code.UNKNOWN_ORDER),
                                         "b3": (order_id, "0.001", None, Code.NOTIONAL_TOO_SMALL),
                                         "b4": (order_id, "0.010", "50000.05", Code.PRICE_NOT_ON_TICK)}.items():
        r = result(amend(st, rid, oid, qty, price))
        assert not r.ok and r.code == code, rid
    assert (st.balances["USDT"].available, st.balances["USDT"].order_margin) == before
    assert not st.orders[order_id].amend_pending


def test_journals_are_numbered_per_account_without_gaps() -> None:
    st = AccountState(account_id=1)
    seqs = [j.account_seq for j in journals(deposit(st, "1000"))]
    seqs += [j.account_seq for j in journals(deposit(st, "1000"))]  # a resend writes nothing
    seqs += [j.account_seq for j in journals(place(st, "BUY", "50000", "0.010", "c1"))]
    order_id = next(iter(st.orders))
    seqs += [j.account_seq for j in journals(leg(st, order_id, 1, "TAKER", "BUY", "50000", "0.010", "0"))]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 4


def test_limit_prices_outside_the_band_around_the_reference_are_refused() -> None:
    st = AccountState(account_id=1)
    deposit(st, "10000")
    for cid, price, ok in (("in-high", "52500", True), ("out-high", "52500.10", False), ("in-low", "47500", True),
                           ("out-low", "47499.90", False)):
        r = result(place_with(st, cid, price=price, band_reference="50000.00"))
        assert r.ok is ok and (ok or r.code == Code.PRICE_OUT_OF_BAND), cid
    assert result(place_with(st, "no-ref", price="90000")).ok  # no trade yet: no band
    order_id = result(place_with(st, "amend-me", price="50000", band_reference="50000.00")).order_id
    r = result(handle(st, m.AmendOrder(**META, request_id="a", account_id=1, symbol=SYM, order_id=order_id,
                                       price="60000", quantity="0.010", band_reference="50000.00")))
    assert not r.ok and r.code == Code.PRICE_OUT_OF_BAND


def test_the_flip_example_of_docs_ledger() -> None:
    """docs/ledger.md, 'Worked example: a flip': these exact journals."""
    st = AccountState(account_id=1)
    _long(st, "0.100")
    sell = result(place(st, "SELL", "51000", "0.150", "flip")).order_id
    outs = leg(st, sell, 2, "TAKER", "SELL", "51000", "0.150", "0")
    got = {j.ref_type: [(p.ledger_account, p.amount) for p in j.postings] for j in journals(outs)}
    assert got == {
        "TRADE_SETTLED": [("user:1:ORDER_MARGIN", "386.32500000"), ("user:1:SPOT", "-386.32500000"),
                          ("user:1:POSITION_MARGIN", "250.00000000"), ("user:1:SPOT", "-250.00000000"),
                          ("user:1:SPOT", "127.50000000"), ("user:1:POSITION_MARGIN", "-127.50000000")],
        "TRADE_FEE": [("user:1:SPOT", "3.82500000"), ("platform:FEE_REVENUE", "-3.82500000")],
        "POSITION_REALIZED_PNL": [("platform:PNL_CLEARING", "100.00000000"), ("user:1:SPOT", "-100.00000000")]}
    pos = st.positions[SYM]
    assert (pos.size_lots, pos.margin, pos.realized_pnl) == (-50, parse_amount("127.5"), parse_amount("100"))


def _postings(outs: list) -> dict[str, list[tuple[str, str]]]:
    return {j.ref_type: [(p.ledger_account, p.amount) for p in j.postings] for j in journals(outs)}


def test_the_open_add_partial_close_example_of_docs_ledger() -> None:
    """docs/ledger.md, 'Worked example: open, add, partial close': these exact journals and balances."""
    st = AccountState(account_id=1)
    deposit(st, "10000")
    spot, order_m, pos_m, fees = "user:1:SPOT", "user:1:ORDER_MARGIN", "user:1:POSITION_MARGIN", "platform:FEE_REVENUE"
    steps = (("open", "BUY", "50000", "0.100", "252.50000000", "2.50000000"),
             ("add", "BUY", "52000", "0.050", "131.30000000", "1.30000000"),
             ("part", "SELL", "53000", "0.060", "160.59000000", "1.59000000"))
    got = []
    for seq, (cid, side, price, qty, frozen, fee) in enumerate(steps, start=1):
        placed = place(st, side, price, qty, cid)
        assert _postings(placed) == {"ORDER_MARGIN_FROZEN": [(spot, frozen), (order_m, "-" + frozen)]}
        filled = leg(st, result(placed).order_id, seq, "TAKER", side, price, qty, "0")
        assert all(journal_sum(j) == 0 for j in journals(filled))
        assert _postings(filled)["TRADE_FEE"] == [(spot, fee), (fees, "-" + fee)]
        assert _postings(filled)["TRADE_SETTLED"][:2] == [(order_m, frozen), (spot, "-" + frozen)]
        bal, pos = st.balances["USDT"], st.positions[SYM]
        got.append((bal.available, bal.order_margin, bal.position_margin, pos.size_lots, pos.cost, pos.realized_pnl,
                    _postings(filled)["TRADE_SETTLED"][2:], _postings(filled).get("POSITION_REALIZED_PNL")))
    a = parse_amount
    assert got == [
        (a("9747.5"), 0, a("250"), 100, a("5000"), 0, [(spot, "250.00000000"), (pos_m, "-250.00000000")], None),
        (a("9616.2"), 0, a("380"), 150, a("7600"), 0, [(spot, "130.00000000"), (pos_m, "-130.00000000")], None),
        (a("9906.61"), 0, a("228"), 90, a("4560"), a("140"), [(pos_m, "152.00000000"), (spot, "-152.00000000")],
         [("platform:PNL_CLEARING", "140.00000000"), (spot, "-140.00000000")])]


def test_the_same_request_id_in_two_accounts_makes_two_journals() -> None:
    """A request id is the client's Idempotency-Key, unique per account only: two accounts' "dep-1" (and
    "wd-1") must be two journals in ClickHouse, whose ReplacingMergeTree would keep one of a shared id."""
    ids_seen = set()
    for acct in (41, 42):
        st = AccountState(account_id=acct)
        (dep,) = journals(deposit(st, "100", rid="dep-1"))
        (wd,) = journals(handle(st, m.Withdraw(**META, request_id="wd-1", account_id=acct, asset="USDT", amount="1")))
        assert dep.journal_id == f"wallet:{acct}:dep-1/DEPOSIT" and wd.journal_id == f"wallet:{acct}:wd-1/WITHDRAWAL"
        ids_seen |= {dep.journal_id, wd.journal_id}
    assert len(ids_seen) == 4


# --- leverage brackets: the position a leverage may carry (docs/risk.md, "Leverage brackets") ------------


def set_leverage(state: AccountState, rid: str, leverage: int) -> m.CommandResult:
    return result(handle(state, m.SetLeverage(**META, request_id=rid, account_id=state.account_id, symbol=SYM,
                                              leverage=leverage)))


def _frozen(st: AccountState) -> tuple[int, int, list[int]]:
    bal = st.balances["USDT"]
    return bal.available, bal.order_margin, sorted(st.orders)


def test_at_125x_orders_beyond_the_first_brackets_cap_are_refused_and_change_nothing() -> None:
    """BTC at 125x may carry 50,000 USDT (the first bracket's cap; 100x: 500,000)."""
    from perpline.contracts.instruments import instrument  # noqa: PLC0415

    btc = instrument(SYM)
    assert [btc.max_notional_at(x) for x in (125, 101, 100, 20, 1)] == [parse_amount(c) for c in (
        "50000", "50000", "500000", "50000000", "500000000")]
    st = AccountState(account_id=1)
    deposit(st, "10000")
    assert set_leverage(st, "l1", 125).ok
    before = _frozen(st)
    outs = place(st, "BUY", "50000", "2.000", "big")  # 100,000 USDT
    assert (result(outs).ok, result(outs).code) == (False, Code.POSITION_CAP_EXCEEDED)
    assert sent_orders(outs) == [] and journals(outs) == [] and _frozen(st) == before
    market = result(place_with(st, "mkt", order_type="MARKET", price_bound="52500", quantity="0.953"))
    assert market.code == Code.POSITION_CAP_EXCEEDED  # 0.953 x 52500 (its bound) = 50,032.5
    assert result(place(st, "BUY", "50000", "1.000", "cap")).ok  # exactly 50,000: allowed
    assert st.balances["USDT"].order_margin == parse_amount("425")  # 50,000 / 125 + 0.05 %
    more = result(place(st, "BUY", "49000", "0.003", "more"))  # the open buy counts: 50,000 + 147
    assert more.code == Code.POSITION_CAP_EXCEEDED
    assert result(place(st, "SELL", "50000", "1.000", "other-side")).ok  # the sell side is 50,000 on its own
    assert result(place(st, "SELL", "50000", "0.002", "other-more")).code == Code.POSITION_CAP_EXCEEDED
    order_id = next(iter(st.orders))
    refused = result(amend(st, "up", order_id, "1.001"))  # an amend is the same check, its old terms replaced
    assert refused.code == Code.POSITION_CAP_EXCEEDED and not st.orders[order_id].amend_pending
    assert result(amend(st, "down", order_id, "0.900")).ok


def test_the_cap_counts_the_position_and_never_blocks_reducing_it() -> None:
    """A position above the cap (ADL opened it: never refused) can be reduced, by reduce-only or plain
    orders, but not grown; an order that flips the position is checked on the side it flips to."""
    st = AccountState(account_id=1)
    deposit(st, "10000")
    assert set_leverage(st, "l1", 125).ok
    handle(st, m.Deleverage(**META, request_id="adl:a:1", account_id=1, adl_id="a", symbol=SYM, side="BUY",
                            quantity="2.000", price="50000", bankrupt=False))
    assert st.positions[SYM].cost == parse_amount("100000")  # long 2 BTC: twice the 125x cap
    assert result(place(st, "BUY", "50000", "0.002", "grow")).code == Code.POSITION_CAP_EXCEEDED
    assert result(place_with(st, "ro", side="SELL", price="51000", quantity="1.500", reduce_only=True)).ok
    assert result(place(st, "SELL", "51000", "0.400", "cut")).ok  # sell side |100,000 - 20,400|: smaller
    past = result(place(st, "SELL", "50000", "3.700", "past"))  # |79,600 - 185,000| = 105,400: larger
    assert past.code == Code.POSITION_CAP_EXCEEDED
    st2 = AccountState(account_id=2)
    deposit(st2, "10000")
    assert set_leverage(st2, "l1", 125).ok
    handle(st2, m.Deleverage(**META, request_id="adl:b:2", account_id=2, adl_id="b", symbol=SYM, side="BUY",
                             quantity="1.000", price="50000", bankrupt=False))
    assert result(place(st2, "SELL", "50000", "2.000", "flip")).ok  # long 50,000 -> short 50,000: at the cap
    assert result(place(st2, "SELL", "50000", "0.002", "flip-more")).code == Code.POSITION_CAP_EXCEEDED


def test_a_leverage_the_position_and_orders_cannot_have_is_refused() -> None:
    st = AccountState(account_id=1)
    deposit(st, "10000")
    buy = result(place(st, "BUY", "50000", "0.600", "b")).order_id  # 30,000 at the default 20x
    sell = result(place(st, "SELL", "50000", "0.500", "s")).order_id  # 25,000
    taken = result(place(st, "BUY", "50000", "0.500", "b2")).order_id  # buys: 55,000
    refused = set_leverage(st, "l1", 125)  # cap 50,000
    assert (refused.ok, refused.code) == (False, Code.POSITION_CAP_EXCEEDED) and SYM not in st.leverage
    assert set_leverage(st, "l2", 100).ok  # cap 500,000
    leg(st, taken, 1, "TAKER", "BUY", "50000", "0.500", "0")  # long 0.5 (25,000) + the open buy (30,000)
    assert set_leverage(st, "l3", 110).code == Code.POSITION_CAP_EXCEEDED and st.leverage[SYM] == 100
    for seq, (oid, leaves) in enumerate(((buy, "0.600"), (sell, "0.500")), start=2):
        handle(st, m.OrderDone(**META, account_id=1, symbol=SYM, seq=seq, order_id=oid, status="CANCELED",
                               leaves=leaves, code=0))
    assert not st.orders and set_leverage(st, "l4", 125).ok  # the position alone: 25,000
