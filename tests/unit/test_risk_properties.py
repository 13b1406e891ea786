"""Properties of liquidation over random price paths and random positions, through the real handlers
(accounts processor rules) and the real liquidation book, with a market maker that always takes the
other side at the mark: after each tick settles, no position is left open past its liquidation
price, and the money is all still there (trial balance zero, wallets + fund + fees + clearing ==
deposits)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from perpline.accounts.handlers import handle
from perpline.accounts.ledger import journal_sum
from perpline.accounts.state import AccountState
from perpline.contracts import messages as m
from perpline.contracts.instruments import instrument
from perpline.contracts.units import parse_amount
from perpline.risk import formulas as f
from perpline.risk.liquidations import LiquidationBook

SYM = "BTCUSDT-PERP"
BTC = instrument(SYM)
META = {"trace_id": "t", "causation_id": "c", "ts_ms": 1}
MM = 1


class World:
    def __init__(self) -> None:
        self.accounts: dict[int, AccountState] = {}
        self.ledger: dict[str, int] = defaultdict(int)
        self.deposits = 0
        self.seq = 0
        self.n = 0

    def run(self, acct: int, cmd: m.Msg) -> list:
        outs = handle(self.accounts.setdefault(acct, AccountState(account_id=acct)), cmd)
        for o in outs:
            if isinstance(o.msg, m.Journal):
                assert journal_sum(o.msg) == 0
                for p in o.msg.postings:
                    self.ledger[p.ledger_account] += parse_amount(p.amount, allow_negative=True)
        return outs

    def rid(self) -> str:
        self.n += 1
        return f"r{self.n}"

    def deposit(self, acct: int, amount: str) -> None:
        self.deposits += parse_amount(amount)
        self.run(acct, m.Deposit(**META, request_id=self.rid(), account_id=acct, asset="USDT", amount=amount))

    def place(self, acct: int, side: str, price: int, lots: int) -> int:
        outs = self.run(acct, m.PlaceOrder(**META, request_id=self.rid(), account_id=acct, symbol=SYM, side=side,  # type: ignore[arg-type]
                                           order_type="LIMIT", price=BTC.format_price(price),
                                           quantity=BTC.format_qty(lots), client_order_id=self.rid()))
        result = next(o.msg for o in outs if isinstance(o.msg, m.CommandResult))
        assert result.ok, result
        return int(result.order_id)

    def fill(self, maker: int, maker_order: int, taker: int, taker_order: int, taker_side: str, price: int,
             lots: int, maker_leaves: int = 0) -> None:
        self.seq += 1
        other = "SELL" if taker_side == "BUY" else "BUY"
        for acct, oid, liq, side, leaves in ((maker, maker_order, "MAKER", other, maker_leaves),
                                             (taker, taker_order, "TAKER", taker_side, 0)):
            self.run(acct, m.FillLeg(**META, account_id=acct, symbol=SYM, seq=self.seq, trade_id=self.seq, order_id=oid,
                                     liquidity=liq, side=side, price=BTC.format_price(price),  # type: ignore[arg-type]
                                     quantity=BTC.format_qty(lots), order_leaves=BTC.format_qty(leaves)))

    def take(self, acct: int, order_id: int, side: str, mark: int, lots: int) -> None:
        """The market maker takes a liquidation IOC of any size (liquidation orders skip the minimum
        notional; the maker's own order must not, so it may be larger, and the rest is cancelled)."""
        placed = max(lots, -(-BTC.min_notional // BTC.notional(mark, 1)))
        maker_order = self.place(MM, "BUY" if side == "SELL" else "SELL", mark, placed)
        self.fill(MM, maker_order, acct, order_id, side, mark, lots, maker_leaves=placed - lots)
        if placed > lots:
            self.seq += 1
            self.run(MM, m.OrderDone(**META, account_id=MM, symbol=SYM, seq=self.seq, order_id=maker_order,
                                     status="CANCELED", leaves=BTC.format_qty(placed - lots), code=0))

    def open(self, acct: int, side: str, lots: int, leverage: int, price: int) -> None:
        self.run(acct, m.SetLeverage(**META, request_id=self.rid(), account_id=acct, symbol=SYM, leverage=leverage))
        mm_side = "SELL" if side == "BUY" else "BUY"
        maker_order = self.place(MM, mm_side, price, lots)
        taker_order = self.place(acct, side, price, lots)
        self.fill(MM, maker_order, acct, taker_order, side, price, lots)

    def tick(self, mark: int) -> None:
        """The risk process's view, its Liquidate commands, and a market maker taking each IOC at the mark,
        again while a position stays crossed (a partial liquidation leaves the rest to the next round)."""
        for _ in range(20):
            if not self.liquidation_round(mark):
                return
        raise AssertionError("still liquidating after 20 rounds")

    def liquidation_round(self, mark: int) -> bool:
        book = LiquidationBook()
        for acct, state in self.accounts.items():
            pos = state.positions.get(SYM)
            if acct != MM and pos is not None and pos.size_lots:
                book.upsert(acct, pos.size_lots, f.liquidation_ticks(BTC, pos.size_lots, pos.cost, pos.margin),
                            pos.version)
        crossed = book.crossed(mark)
        for acct, version in crossed:
            for attempt in (0, 1):
                outs = self.run(acct, m.Liquidate(**META, request_id=self.rid(), account_id=acct, symbol=SYM,
                                                  position_version=version, mark_price=BTC.format_price(mark),
                                                  attempt=attempt))
                order = next((o.msg for o in outs if isinstance(o.msg, m.NewOrder)), None)
                if order is None:
                    break
                limit, lots = BTC.parse_price(order.price), BTC.parse_qty(order.quantity)
                marketable = mark >= limit if order.side == "SELL" else mark <= limit
                if marketable:  # the maker bids/asks at the mark: the IOC fills there
                    self.take(acct, order.order_id, order.side, mark, lots)
                    break
                self.seq += 1  # the IOC found nothing at its price: the matcher expires it
                self.run(acct, m.OrderDone(**META, account_id=acct, symbol=SYM, seq=self.seq, order_id=order.order_id,
                                           status="EXPIRED", leaves=order.quantity, code=0))
                version = self.accounts[acct].positions[SYM].version
        return bool(crossed)


@settings(max_examples=80, deadline=None)
@given(opens=st.lists(st.tuples(st.sampled_from(["BUY", "SELL"]), st.integers(2, 3000), st.integers(2, 100)),
                      min_size=1, max_size=6),
       steps=st.lists(st.integers(-20_000, 20_000), min_size=1, max_size=25))  # moves up to 4 % a tick
def test_no_position_outlives_its_liquidation_price_and_no_money_appears(opens: list, steps: list) -> None:
    world = World()
    world.deposit(MM, "100000000")
    price = 500_000
    for i, (side, lots, leverage) in enumerate(opens, start=2):
        world.deposit(i, "100000")  # up to 3 BTC (150,000 USDT, the second bracket: partial liquidation)
        world.open(i, side, lots, leverage, price)
    for step in steps:
        price = max(1000, price + step)
        world.tick(price)
        for acct, state in world.accounts.items():
            pos = state.positions.get(SYM)
            if acct == MM or pos is None or not pos.size_lots:
                continue
            liq = f.liquidation_ticks(BTC, pos.size_lots, pos.cost, pos.margin)
            assert not f.crossed(pos.size_lots, liq, price), (acct, pos, price)
        assert sum(world.ledger.values()) == 0
        held = -sum(v for k, v in world.ledger.items() if k != "platform:HOT_WALLET")
        assert held == world.deposits == world.ledger["platform:HOT_WALLET"]
        for acct, state in world.accounts.items():
            assert state.balances["USDT"].order_margin == 0, acct  # no liquidation order left holding anything


def test_the_harness_liquidates_a_gap_through_the_bankruptcy_price_with_the_fund() -> None:
    """The same world, one path: a 100x long, then a 3 % gap down. Attempt 0 (bankruptcy price) finds no
    bid at that price, attempt 1 sells at the mark and the insurance fund pays the deficit."""
    world = World()
    world.deposit(MM, "100000000")
    world.deposit(2, "10000")
    world.open(2, "BUY", 100, 100, 500_000)  # 0.1 BTC at 50000, 50 USDT margin, liquidation near 49700
    world.tick(485_000)
    assert world.accounts[2].positions[SYM].size_lots == 0
    assert world.ledger["platform:INSURANCE_FUND"] == parse_amount("100")  # lost 150 on 50 of margin: fund pays 100
    assert world.accounts[2].balances["USDT"].wallet == parse_amount("10000") - parse_amount("50") - parse_amount("2.5")
