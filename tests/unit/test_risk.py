"""Perpetual risk without a broker: the formulas, the liquidation book, and hand-computed scenarios of
funding and liquidation through the accounts handlers (the worked examples of docs/risk.md)."""

from __future__ import annotations

import random
from collections import defaultdict

from perpline.accounts.handlers import handle
from perpline.accounts.ledger import journal_sum
from perpline.accounts.state import AccountState
from perpline.contracts import messages as m
from perpline.contracts.instruments import instrument
from perpline.contracts.units import format_amount, parse_amount
from perpline.risk import formulas as f
from perpline.risk.liquidations import LiquidationBook

META = {"trace_id": "t", "causation_id": "c", "ts_ms": 1}
SYM = "BTCUSDT-PERP"
BTC = instrument(SYM)
SEQ = iter(range(1, 10**6))


def px(text: str) -> int:
    return BTC.parse_price(text)


def run(state: AccountState, cmd: m.Msg, book: dict[str, int]) -> list:
    """Apply a command and add its journals to a running trial balance (ledger account -> amount)."""
    outs = handle(state, cmd)
    for o in outs:
        if isinstance(o.msg, m.Journal):
            assert journal_sum(o.msg) == 0
            for p in o.msg.postings:
                book[p.ledger_account] += parse_amount(p.amount, allow_negative=True)
    return outs


def trade(maker: AccountState, taker: AccountState, side: str, price: str, qty: str, book: dict[str, int],
          leverage: int = 20) -> None:
    """taker `side`s `qty` at `price` against a resting maker order."""
    for st in (maker, taker):
        run(st, m.SetLeverage(**META, request_id=f"lev{next(SEQ)}", account_id=st.account_id, symbol=SYM,
                              leverage=leverage), book)
    other = "SELL" if side == "BUY" else "BUY"
    ids = []
    for st, s in ((maker, other), (taker, side)):
        outs = run(st, m.PlaceOrder(**META, request_id=f"p{next(SEQ)}", account_id=st.account_id, symbol=SYM, side=s,
                                    order_type="LIMIT", price=price, quantity=qty, client_order_id=f"c{next(SEQ)}"), book)
        ids.append(next(o.msg for o in outs if isinstance(o.msg, m.CommandResult)).order_id)
    seq = next(SEQ)
    for st, oid, liq, s in ((maker, ids[0], "MAKER", other), (taker, ids[1], "TAKER", side)):
        run(st, m.FillLeg(**META, account_id=st.account_id, symbol=SYM, seq=seq, trade_id=seq, order_id=oid,
                          liquidity=liq, side=s, price=price, quantity=qty, order_leaves="0"), book)  # type: ignore[arg-type]


def funded(users: list[AccountState], book: dict[str, int]) -> None:
    for st in users:
        run(st, m.Deposit(**META, request_id=f"d{st.account_id}", account_id=st.account_id, asset="USDT",
                          amount="10000"), book)


# --- formulas ------------------------------------------------------------------------------------


def test_premium_funding_rate_and_mark() -> None:
    assert f.premium_e8(px("50000"), px("50010"), px("50020")) == 20_000  # (50010-50000)/50000 = 0.02 %
    assert f.premium_e8(px("50000"), px("49980"), px("49990")) == -20_000
    assert f.premium_e8(px("50000"), px("49990"), px("50010")) == 0  # index inside the spread
    assert f.funding_rate_e8(BTC, []) == 10_000  # no premium: the interest rate, 0.01 %
    assert f.funding_rate_e8(BTC, [20_000, 40_000]) == 30_000 + (-20_000)  # 0.03 % + clamp(0.01-0.03) = 0.01 %
    assert f.funding_rate_e8(BTC, [200_000]) == 200_000 - 50_000  # the clamp bites at 0.05 %
    assert f.funding_rate_e8(BTC, [5_000_000]) == 750_000  # the cap: 0.75 %
    index = px("50000")
    # price1 = 50000 x (1 + 0.0001 x 4h/8h) = 50002.5; price2 = 50000 + 3 = 50003; last 50100 -> median 50003
    assert f.mark_ticks(index, px("49990"), px("50010"), px("50100"), 10_000, 4 * 3600_000, 8 * 3600_000,
                        px("3")) == px("50003")
    assert f.mark_ticks(index, 0, 0, 0, 10_000, 0, 1000, 0) == index  # nothing but the index


def test_funding_payment_rounds_in_the_exchanges_favour() -> None:
    # 0.003 BTC at 50000.1 = 150.0003 USDT; x 0.012345 % = 0.018517537035
    assert f.funding_payment(BTC, 3, px("50000.1"), 12_345) == parse_amount("0.01851754")  # a long pays, up
    assert f.funding_payment(BTC, -3, px("50000.1"), 12_345) == -parse_amount("0.01851753")  # a short gets, down
    assert f.funding_payment(BTC, -3, px("50000.1"), -12_345) == parse_amount("0.01851754")  # negative rate: shorts pay
    assert f.funding_payment(BTC, 0, px("50000"), 12_345) == 0


def test_liquidation_and_bankruptcy_prices() -> None:
    # long 0.1 @ 50000 with 250 margin (20x): (5000 - 250 - 0) / (0.1 x (1 - 0.004)) = 47690.763..
    cost, margin = parse_amount("5000"), parse_amount("250")
    assert f.liquidation_ticks(BTC, 100, cost, margin) == px("47690.8")  # rounded up: triggers no later
    assert f.bankruptcy_ticks(BTC, 100, cost, margin) == px("47500")
    # short 0.1 @ 50000: (5000 + 250) / (0.1 x 1.004) = 52290.836.. rounded down
    assert f.liquidation_ticks(BTC, -100, cost, margin) == px("52290.8")
    assert f.bankruptcy_ticks(BTC, -100, cost, margin) == px("52500")
    assert f.liquidation_ticks(BTC, 100, cost, cost) == 0  # 1x long: no price liquidates it
    assert f.crossed(100, px("47690.8"), px("47690.8")) and not f.crossed(100, px("47690.8"), px("47690.9"))


def test_the_liquidation_book_returns_only_what_a_mark_crosses() -> None:
    book, rng = LiquidationBook(), random.Random(3)
    truth = {}
    for account in range(2000):
        size = rng.choice((-1, 1)) * rng.randint(1, 50)
        liq = rng.randint(40_000, 60_000)
        book.upsert(account, size, liq, version=account)
        truth[account] = (size, liq)
    for account in range(0, 2000, 7):  # moves and closes
        size, liq = truth[account]
        truth[account] = (size, liq + 5) if account % 2 else (0, 0)
        book.upsert(account, *truth[account], version=account)
    for mark in (39_000, 41_234, 50_000, 58_765, 61_000):
        want = sorted(a for a, (size, liq) in truth.items() if size and f.crossed(size, liq, mark))
        assert sorted(a for a, _ in book.crossed(mark)) == want


# --- scenarios through the accounts handlers -----------------------------------------------------


def test_funding_both_ways_nets_to_the_rounding_residue() -> None:
    book: dict[str, int] = defaultdict(int)
    alice, bob = AccountState(account_id=1), AccountState(account_id=2)
    funded([alice, bob], book)
    trade(bob, alice, "BUY", "50000.1", "0.003", book)  # alice long 0.003, bob short
    rate, mark = 12_345, px("50000.1")
    for st, size in ((alice, 3), (bob, -3)):
        amount = f.funding_payment(BTC, size, mark, rate)
        run(st, m.FundingCharge(**META, request_id=f"funding:{SYM}:1000:{st.account_id}", account_id=st.account_id,
                                symbol=SYM, funding_time_ms=1000, rate="0.00012345", mark_price="50000.1",
                                size=BTC.format_qty(size), amount=format_amount(amount)), book)
    # paid 0.01851754, received 0.01851753: the clearing account holds the 1e-8 residue (a credit balance)
    assert book["platform:FUNDING_CLEARING"] == -parse_amount("0.00000001")
    before = alice.balances["USDT"].available
    again = handle(alice, m.FundingCharge(**META, request_id=f"funding:{SYM}:1000:1", account_id=1, symbol=SYM,
                                          funding_time_ms=1000, rate="0.00012345", mark_price="50000.1",
                                          size="0.003", amount="0.01851754"))
    assert alice.balances["USDT"].available == before and not [o for o in again if isinstance(o.msg, m.Journal)]
    # negative rate: the short pays this time
    for st, size in ((alice, 3), (bob, -3)):
        amount = f.funding_payment(BTC, size, mark, -12_345)
        run(st, m.FundingCharge(**META, request_id=f"funding:{SYM}:2000:{st.account_id}", account_id=st.account_id,
                                symbol=SYM, funding_time_ms=2000, rate="-0.00012345", mark_price="50000.1",
                                size=BTC.format_qty(size), amount=format_amount(amount)), book)
    assert book["platform:FUNDING_CLEARING"] == -parse_amount("0.00000002")
    assert sum(book.values()) == 0


def _long_then_liquidate(fill_price: str, attempt: int) -> tuple[AccountState, dict[str, int], int, list]:
    book: dict[str, int] = defaultdict(int)
    alice, bob, carol = AccountState(account_id=1), AccountState(account_id=2), AccountState(account_id=3)
    funded([alice, bob, carol], book)
    trade(bob, alice, "BUY", "50000", "0.100", book)  # alice long 0.1 @ 50000, 250 margin at 20x, taker fee 2.5
    pos = alice.positions[SYM]
    assert (pos.cost, pos.margin) == (parse_amount("5000"), parse_amount("250"))
    outs = run(alice, m.Liquidate(**META, request_id="liq:1", account_id=1, symbol=SYM, position_version=pos.version,
                                  mark_price="47600", attempt=attempt), book)
    order = next(o.msg for o in outs if isinstance(o.msg, m.NewOrder))
    assert (order.side, order.time_in_force, order.quantity, order.reduce_only) == ("SELL", "IOC", "0.100", True)
    assert order.price == ("47500.00" if attempt == 0 else "45220.00")  # bankruptcy, or the mark - 5 %
    seq = next(SEQ)
    carol_id = next(o.msg for o in run(carol, m.PlaceOrder(
        **META, request_id="cb", account_id=3, symbol=SYM, side="BUY", order_type="LIMIT", price=fill_price,
        quantity="0.100", client_order_id="cb"), book) if isinstance(o.msg, m.CommandResult)).order_id
    run(carol, m.FillLeg(**META, account_id=3, symbol=SYM, seq=seq, trade_id=seq, order_id=carol_id, liquidity="MAKER",
                         side="BUY", price=fill_price, quantity="0.100", order_leaves="0"), book)
    outs = run(alice, m.FillLeg(**META, account_id=1, symbol=SYM, seq=seq, trade_id=seq, order_id=order.order_id,
                                liquidity="TAKER", side="SELL", price=fill_price, quantity="0.100", order_leaves="0"), book)
    return alice, book, parse_amount("10000") - parse_amount("2.5") - parse_amount("250"), outs


def test_a_liquidation_covered_by_its_margin_feeds_the_insurance_fund() -> None:
    alice, book, wallet, outs = _long_then_liquidate("47600", attempt=0)
    assert alice.positions[SYM].size_lots == 0 and alice.orders == {}
    assert alice.balances["USDT"].available == wallet  # alice lost exactly her margin; no fee on the close
    assert book["platform:INSURANCE_FUND"] == -parse_amount("10")  # 250 - 240 loss = 10 into the fund (a credit)
    assert sum(book.values()) == 0


def test_a_liquidation_beyond_the_bankruptcy_price_is_paid_by_the_insurance_fund() -> None:
    alice, book, wallet, outs = _long_then_liquidate("47400", attempt=1)
    assert alice.balances["USDT"].available == wallet  # still exactly her margin: the fund paid the 10 beyond it
    assert book["platform:INSURANCE_FUND"] == parse_amount("10")
    assert sum(book.values()) == 0


def test_a_later_attempt_goes_beyond_bankruptcy_only_as_far_as_the_fund_can_pay() -> None:
    book: dict[str, int] = defaultdict(int)
    alice, bob = AccountState(account_id=1), AccountState(account_id=2)
    funded([alice, bob], book)
    trade(bob, alice, "BUY", "50000", "0.100", book)  # bankruptcy 47500 (see above)
    version = alice.positions[SYM].version
    outs = run(alice, m.Liquidate(**META, request_id="l1", account_id=1, symbol=SYM, position_version=version,
                                  mark_price="47600", attempt=1, max_loss="10"), book)
    order = next(o.msg for o in outs if isinstance(o.msg, m.NewOrder))
    assert order.price == "47400.00"  # 10 USDT over 0.1 BTC: 100 below the bankruptcy price, not the mark - 5 %
    alice2, bob2 = AccountState(account_id=1), AccountState(account_id=2)
    funded([alice2, bob2], book)
    trade(bob2, alice2, "BUY", "50000", "0.100", book)
    outs = run(alice2, m.Liquidate(**META, request_id="l2", account_id=1, symbol=SYM, position_version=version,
                                   mark_price="47600", attempt=2, max_loss="0"), book)
    assert next(o.msg for o in outs if isinstance(o.msg, m.NewOrder)).price == "47500.00"  # an empty fund: bankruptcy


def test_every_insurance_fund_move_is_reported_to_the_risk_process() -> None:
    for fill, amount in (("47600", "10.00000000"), ("47400", "-10.00000000")):  # into the fund, out of it
        _, book, _, outs = _long_then_liquidate(fill, attempt=1 if fill == "47400" else 0)
        moved = [(o.topic, o.msg.amount, o.msg.asset) for o in outs if isinstance(o.msg, m.InsuranceFundMoved)]
        assert moved == [("positions", amount, "USDT")]
        assert -book["platform:INSURANCE_FUND"] == parse_amount(amount, allow_negative=True)


def test_a_position_above_the_first_bracket_is_liquidated_down_to_it_first() -> None:
    """Partial liquidation (docs/risk.md): alice long 2 BTC at 50000 (entry value 100,000: the second
    bracket, mmr 0.5 %, maint_amount 50) with 5000 margin. Liquidation (100000 - 5000 - 50) / (2 x 0.995)
    = 47713.6, bankruptcy 47500. The first liquidation sells 1 BTC, what brings the entry value to the
    first bracket's cap (50,000); the rest (margin 2500) has liquidation price (50000 - 2500) / 0.996 =
    47690.8, no longer crossed at a mark of 47700."""
    book: dict[str, int] = defaultdict(int)
    alice, bob, carol = AccountState(account_id=1), AccountState(account_id=2), AccountState(account_id=3)
    funded([alice, bob, carol], book)
    trade(bob, alice, "BUY", "50000", "2.000", book)
    pos = alice.positions[SYM]
    assert (pos.cost, pos.margin) == (parse_amount("100000"), parse_amount("5000"))
    assert BTC.format_price(f.liquidation_ticks(BTC, pos.size_lots, pos.cost, pos.margin)) == "47713.60"
    assert f.liquidation_close_lots(BTC, pos.size_lots, pos.cost) == BTC.parse_qty("1.000")
    outs = run(alice, m.Liquidate(**META, request_id="liq:big", account_id=1, symbol=SYM, position_version=pos.version,
                                  mark_price="47700"), book)
    order = next(o.msg for o in outs if isinstance(o.msg, m.NewOrder))
    assert (order.side, order.quantity, order.price) == ("SELL", "1.000", "47500.00")
    seq = next(SEQ)
    carol_id = next(o.msg for o in run(carol, m.PlaceOrder(
        **META, request_id="cb-big", account_id=3, symbol=SYM, side="BUY", order_type="LIMIT", price="47600",
        quantity="1.000", client_order_id="cb-big"), book) if isinstance(o.msg, m.CommandResult)).order_id
    run(carol, m.FillLeg(**META, account_id=3, symbol=SYM, seq=seq, trade_id=seq, order_id=carol_id, liquidity="MAKER",
                         side="BUY", price="47600", quantity="1.000", order_leaves="0"), book)
    outs = run(alice, m.FillLeg(**META, account_id=1, symbol=SYM, seq=seq, trade_id=seq, order_id=order.order_id,
                                liquidity="TAKER", side="SELL", price="47600", quantity="1.000", order_leaves="0"), book)
    rest = alice.positions[SYM]
    assert (BTC.format_qty(rest.size_lots), rest.cost, rest.margin) == ("1.000", parse_amount("50000"), parse_amount("2500"))
    liq = f.liquidation_ticks(BTC, rest.size_lots, rest.cost, rest.margin)
    assert BTC.format_price(liq) == "47690.80" and not f.crossed(rest.size_lots, liq, BTC.parse_price("47700"))
    assert book["platform:INSURANCE_FUND"] == -parse_amount("100")  # 2500 closed margin - 2400 loss
    assert [o.msg.filled for o in outs if isinstance(o.msg, m.LiquidationOrderDone)] == ["1.000"]
    assert alice.balances["USDT"].available == parse_amount("10000") - parse_amount("50") - parse_amount("5000")
    assert sum(book.values()) == 0


def test_a_stale_or_repeated_liquidation_changes_nothing() -> None:
    book: dict[str, int] = defaultdict(int)
    alice, bob = AccountState(account_id=1), AccountState(account_id=2)
    funded([alice, bob], book)
    trade(bob, alice, "BUY", "50000", "0.100", book)
    version = alice.positions[SYM].version
    stale = run(alice, m.Liquidate(**META, request_id="l0", account_id=1, symbol=SYM, position_version=version - 1,
                                   mark_price="47000"), book)
    assert not next(o.msg for o in stale if isinstance(o.msg, m.CommandResult)).ok and alice.orders == {}
    run(alice, m.Liquidate(**META, request_id="l1", account_id=1, symbol=SYM, position_version=version,
                           mark_price="47000"), book)
    again = run(alice, m.Liquidate(**META, request_id="l2", account_id=1, symbol=SYM, position_version=version,
                                   mark_price="47000", attempt=1), book)
    assert not next(o.msg for o in again if isinstance(o.msg, m.CommandResult)).ok and len(alice.orders) == 1


def test_auto_deleveraging_closes_the_bankrupt_position_against_the_top_ranked_opposite_one() -> None:
    """alice long 0.1 at 50000 (250 margin) is bankrupt at 47500 and the book cannot take it: ADL trades
    it with bob's short at 47500. alice loses exactly her margin, bob realises +250, the fund is untouched."""
    book: dict[str, int] = defaultdict(int)
    alice, bob = AccountState(account_id=1), AccountState(account_id=2)
    funded([alice, bob], book)
    trade(bob, alice, "BUY", "50000", "0.100", book)
    for st, side, bankrupt in ((alice, "SELL", True), (bob, "BUY", False)):
        run(st, m.Deleverage(**META, request_id=f"adl:x1:{st.account_id}", account_id=st.account_id, adl_id="x1",
                             symbol=SYM, side=side, quantity="0.100", price="47500", bankrupt=bankrupt), book)  # type: ignore[arg-type]
    assert alice.positions[SYM].size_lots == 0 and bob.positions[SYM].size_lots == 0
    assert alice.balances["USDT"].wallet == parse_amount("10000") - parse_amount("2.5") - parse_amount("250")
    assert bob.positions[SYM].realized_pnl == parse_amount("250")
    assert book["platform:INSURANCE_FUND"] == 0 and sum(book.values()) == 0
    again = handle(bob, m.Deleverage(**META, request_id="adl:x1:2", account_id=2, adl_id="x1", symbol=SYM, side="BUY",
                                     quantity="0.100", price="47500", bankrupt=False))
    assert bob.positions[SYM].size_lots == 0 and not [o for o in again if isinstance(o.msg, m.Journal)]  # a resend


def test_adl_plan_takes_the_most_profitable_most_leveraged_opposite_positions_first() -> None:
    from perpline.risk import adl  # noqa: PLC0415
    from perpline.risk.state import SymbolState  # noqa: PLC0415

    s = SymbolState(BTC)
    s.mark_ticks = px("47000")
    # the bankrupt long 0.1 at 50000 with 250 margin; three shorts from 50000 with different margins
    s.positions = {1: (100, parse_amount("5000"), parse_amount("250"), 7),
                   2: (-60, parse_amount("3000"), parse_amount("1500"), 1),   # 2x: profit 180 on 1500
                   3: (-50, parse_amount("2500"), parse_amount("125"), 1),    # 20x: profit 150 on 125 -> first
                   4: (-100, parse_amount("5000"), parse_amount("500"), 1),   # 10x: profit 300 on 500 -> second
                   5: (30, parse_amount("1500"), parse_amount("75"), 1)}      # same side: never
    record = adl.plan(s, 1, 1000)
    assert record is not None and record.fills == [(3, "0.050"), (4, "0.050")]
    assert (record.side, record.price, record.adl_id) == ("SELL", "47500.00", f"{SYM}:1:7")
    s.positions = {1: s.positions[1], 5: s.positions[5]}
    assert adl.plan(s, 1, 1000) is None  # nobody on the other side


def test_the_random_walk_index_is_seeded_integer_and_about_as_volatile_as_asked() -> None:
    from itertools import islice  # noqa: PLC0415

    from perpline.risk.index_feed import random_walk  # noqa: PLC0415

    first = list(islice(random_walk(7, 50_000), 400))  # 0.05 % a step
    assert first == list(islice(random_walk(7, 50_000), 400)) and first != list(islice(random_walk(8, 50_000), 400))
    prices = [px(step[SYM]) for step in first]
    moves = [(b - a) * 10**8 // a for a, b in zip(prices, prices[1:], strict=False)]  # in parts per 1e8
    spread = (sum(x * x for x in moves) // len(moves)) ** 0.5
    assert 35_000 < spread < 65_000, spread  # about 0.05 % a step
    assert all(step[SYM] == BTC.format_price(px(step[SYM])) for step in first)  # whole ticks
