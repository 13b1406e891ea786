"""A refused command changes nothing: for random account states (balances, open and reduce-only orders,
partly filled orders, positions, leverage, used nonces) and random commands, valid and not, every
refusal leaves the state's encoded bytes as they were and emits only its refusal.

What a refusal is, and all it may leave behind:
- an API or risk-process request answered with a CommandResult that is not ok: the outputs are exactly
  that one result on account.events, and the state differs only in its request memory (the decision is
  remembered under the request id, and a signed command's nonce is used up, as on Binance);
- a settlement leg the handler refuses (Reject, UnitError, IllegalTransition, or an invariant it asserts;
  the processor dead-letters it): the state is byte for byte what it was.
"""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from perpline.accounts.handlers import Reject, handle
from perpline.accounts.memory import DictMemory, Memory
from perpline.accounts.order_status import IllegalTransition
from perpline.accounts.state import AccountState, from_store, to_store
from perpline.contracts import messages as m
from perpline.contracts.instruments import instrument
from perpline.contracts.units import UnitError

ACCT = 7
SYM = "BTCUSDT-PERP"
BTC = instrument(SYM)
MEMORY_FIELDS = ("local", "requests_remembered", "request_digests", "nonce_digests", "nonces", "nonce_buckets",
                 "nonce_floor_ms")
# How a settlement leg is refused (dead-lettered by the processor); a leg that breaks an invariant the
# handler asserts (a fill beyond the open quantity) must be stopped before anything changes too.
REFUSED_LEG = (Reject, UnitError, IllegalTransition, AssertionError)

PRICES = ["50000", "49000.5", "51000", "50000.05", "0", "-1", "abc", "1e3", "9" * 30, ""]
QUANTITIES = ["0.010", "0.002", "0.5", "3", "0", "0.0001", "-0.01", "x", "9" * 30]
AMOUNTS = ["10", "1000", "250000", "0", "-5", "0.000000001", "NaN", "1" * 40]
SIGNED_AMOUNTS = ["5", "-5", "0", "0.1", "1000000", "abc", "1.123456789"]


class Builder:
    """Drives one account through the real handlers into a random state (refusals on the way are fine)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.state = AccountState(account_id=ACCT)
        self.n = 0

    def meta(self) -> dict[str, object]:
        self.n += 1
        return {"trace_id": "t", "causation_id": "c", "ts_ms": 1_700_000_000_000 + self.n}

    def rid(self) -> str:
        return f"r{self.n}"

    def draw(self, strategy: st.SearchStrategy) -> object:
        return self.data.draw(strategy)

    def next_seq(self) -> int:
        return max(self.state.applied.values(), default=0) // 2 + 1

    def build(self) -> AccountState:
        if self.draw(st.booleans()):
            self.run(m.Deposit(**self.meta(), request_id="dep", account_id=ACCT, asset="USDT",
                               amount=self.draw(st.sampled_from(["200", "5000", "100000"])), nonce="used",
                               signed_ms=1_700_000_000_000))
        for _ in range(self.draw(st.integers(0, 8))):
            step = self.draw(st.sampled_from(["place", "place", "fill", "fill", "leverage", "done", "amend"]))
            getattr(self, step)()
        return self.state

    def run(self, cmd: m.Msg) -> None:
        try:
            handle(self.state, cmd)
        except REFUSED_LEG:
            pass

    def place(self) -> None:
        side = self.draw(st.sampled_from(["BUY", "SELL"]))
        self.run(m.PlaceOrder(**self.meta(), request_id=self.rid(), account_id=ACCT, symbol=SYM, side=side,
                              order_type="LIMIT", price=self.draw(st.sampled_from(["49900", "50000", "50100"])),
                              quantity=self.draw(st.sampled_from(["0.002", "0.010", "0.050"])),
                              client_order_id=f"c{self.n}", reduce_only=self.draw(st.booleans())))

    def open_order(self) -> m.Msg | None:
        orders = sorted(self.state.orders)
        return self.state.orders[self.draw(st.sampled_from(orders))] if orders else None

    def fill(self) -> None:
        order = self.open_order()
        if order is None:
            return
        lots = self.draw(st.integers(1, order.leaves_lots))
        self.run(m.FillLeg(**self.meta(), account_id=ACCT, symbol=SYM, seq=self.next_seq(), trade_id=self.n,
                           order_id=order.order_id, liquidity=self.draw(st.sampled_from(["MAKER", "TAKER"])),
                           side=order.side, price=BTC.format_price(order.price_ticks), quantity=BTC.format_qty(lots),
                           order_leaves=BTC.format_qty(order.leaves_lots - lots)))

    def leverage(self) -> None:
        self.run(m.SetLeverage(**self.meta(), request_id=self.rid(), account_id=ACCT, symbol=SYM,
                               leverage=self.draw(st.sampled_from([5, 10, 20, 50]))))

    def done(self) -> None:
        order = self.open_order()
        if order is not None:
            self.run(m.OrderDone(**self.meta(), account_id=ACCT, symbol=SYM, seq=self.next_seq(),
                                 order_id=order.order_id, status="CANCELED", leaves="0", code=0))

    def amend(self) -> None:
        order = self.open_order()
        if order is not None:
            self.run(m.AmendOrder(**self.meta(), request_id=self.rid(), account_id=ACCT, symbol=SYM,
                                  order_id=order.order_id, quantity=BTC.format_qty(order.qty_lots + 1)))


def any_command(b: Builder) -> m.Msg:
    """One command of any kind, with values drawn to be refused often (unknown ids and symbols, numbers
    no instrument accepts, too little money, stale versions, used nonces)."""
    state, draw = b.state, b.draw
    order_ids = sorted(state.orders) + [999, ACCT << 32 | 12345]
    order_id = draw(st.sampled_from(order_ids))
    symbol = draw(st.sampled_from([SYM, SYM, "ETHUSDT-PERP", "NOPE"]))
    pos = state.positions.get(SYM)
    version = pos.version if pos is not None else 0
    signed = draw(st.sampled_from([{}, {}, {"nonce": "used", "signed_ms": 1_700_000_000_000},
                                   {"nonce": "fresh", "signed_ms": 1_700_000_000_000}, {"nonce": "old", "signed_ms": 5}]))
    api = {**b.meta(), "request_id": f"x{b.n}", "account_id": ACCT, **signed}
    risk = {**b.meta(), "request_id": f"x{b.n}", "account_id": ACCT}
    leg = {**b.meta(), "account_id": ACCT, "symbol": symbol}
    seq = draw(st.sampled_from([b.next_seq(), max(b.next_seq() - 1, 1)]))
    price, qty = draw(st.sampled_from(PRICES)), draw(st.sampled_from(QUANTITIES))
    kind = draw(st.sampled_from(["deposit", "withdraw", "place", "market", "cancel", "cancel_all", "leverage", "amend",
                                 "funding", "liquidate", "deleverage", "fill", "done", "amend_done"]))
    if kind in ("deposit", "withdraw"):
        cls = m.Deposit if kind == "deposit" else m.Withdraw
        return cls(**api, asset=draw(st.sampled_from(["USDT", "BTC"])), amount=draw(st.sampled_from(AMOUNTS)))
    if kind == "place":
        return m.PlaceOrder(**api, symbol=symbol, side=draw(st.sampled_from(["BUY", "SELL"])),
                            order_type=draw(st.sampled_from(["LIMIT", "LIMIT", "STOP"])),
                            time_in_force=draw(st.sampled_from(["GTC", "IOC", "FOK", "GTX"])), price=price,
                            quantity=qty, client_order_id=draw(st.sampled_from(["new", "c1", "c2", "", "z" * 40])),
                            reduce_only=draw(st.booleans()),
                            band_reference=draw(st.sampled_from([None, "50000", "30000", "bad"])))
    if kind == "market":
        return m.PlaceOrder(**api, symbol=symbol, side=draw(st.sampled_from(["BUY", "SELL"])), order_type="MARKET",
                            time_in_force=draw(st.sampled_from(["GTC", "GTX"])), quantity=qty, client_order_id="mk",
                            price=draw(st.sampled_from([None, "50000"])),
                            price_bound=draw(st.sampled_from([None, price])), reduce_only=draw(st.booleans()))
    if kind == "cancel":
        return m.CancelOrder(**api, symbol=symbol, order_id=draw(st.sampled_from([order_id, None])),
                             client_order_id=draw(st.sampled_from([None, "c1", "zz"])))
    if kind == "cancel_all":
        return m.CancelAll(**api, symbol=symbol)
    if kind == "leverage":
        return m.SetLeverage(**api, symbol=symbol, leverage=draw(st.integers(-1, 130)))
    if kind == "amend":
        return m.AmendOrder(**api, symbol=symbol, order_id=order_id, price=draw(st.sampled_from([None, price])),
                            quantity=qty, band_reference=draw(st.sampled_from([None, "50000", "30000"])))
    if kind == "funding":
        return m.FundingCharge(**risk, symbol=symbol, funding_time_ms=b.n, rate="0.0001", mark_price="50000",
                               size="0", amount=draw(st.sampled_from(SIGNED_AMOUNTS)))
    if kind == "liquidate":
        return m.Liquidate(**risk, symbol=symbol, position_version=draw(st.sampled_from([version, version + 1])),
                           mark_price=price, attempt=draw(st.integers(0, 2)),
                           max_loss=draw(st.sampled_from(["", "100", "-1", "abc"])))
    if kind == "deleverage":
        return m.Deleverage(**risk, adl_id=f"a{b.n}", symbol=symbol, side=draw(st.sampled_from(["BUY", "SELL"])),
                            quantity=qty, price=price, bankrupt=draw(st.booleans()))
    if kind == "fill":
        order = state.orders.get(order_id)
        if order is not None and draw(st.booleans()):  # a fill the order can take, at a price that may not parse
            qty = BTC.format_qty(draw(st.integers(1, order.leaves_lots)))
        return m.FillLeg(**leg, seq=seq, trade_id=b.n, order_id=order_id,
                         liquidity=draw(st.sampled_from(["MAKER", "TAKER"])), side=draw(st.sampled_from(["BUY", "SELL"])),
                         price=price, quantity=qty, order_leaves="0")
    if kind == "done":
        return m.OrderDone(**leg, seq=seq, order_id=order_id,
                           status=draw(st.sampled_from(["CANCELED", "EXPIRED", "REJECTED"])), leaves="0", code=0)
    order = state.orders.get(order_id)
    consistent = order is not None and draw(st.booleans())
    return m.AmendDone(**leg, seq=seq, order_id=order_id, ok=draw(st.booleans()), price=price,
                       quantity=BTC.format_qty(order.qty_lots) if consistent else qty,  # type: ignore[union-attr]
                       leaves=BTC.format_qty(order.leaves_lots) if consistent else qty)  # type: ignore[union-attr]


def without_memory_changes(after: AccountState, before: AccountState) -> bytes:
    """`after` encoded with `before`'s request memory: what the rest of the state is."""
    return to_store(msgspec.structs.replace(after, **{f: getattr(before, f) for f in MEMORY_FIELDS}))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_a_refused_command_changes_nothing_and_emits_only_its_refusal(data: st.DataObject) -> None:
    builder = Builder(data)
    state = builder.build()
    cmd = any_command(builder)
    before = to_store(state)
    try:
        outs = handle(state, cmd)
    except REFUSED_LEG:
        event(f"refused leg {type(cmd).__name__}")
        assert to_store(state) == before, f"a refused {type(cmd).__name__} changed the state"
        return
    results = [o.msg for o in outs if isinstance(o.msg, m.CommandResult)]
    if not results or results[0].ok:
        return  # applied (or answered again): not a refusal
    (result,) = results
    event(f"refused request {type(cmd).__name__}")
    assert [(o.topic, o.key, o.msg) for o in outs] == [("account.events", str(ACCT), result)], \
        f"a refused {type(cmd).__name__} emitted more than its result"
    old = from_store(before)
    assert without_memory_changes(state, old) == before, f"a refused {type(cmd).__name__} changed the state"
    remembered = Memory(state, DictMemory(state.local)).request(result.request_id)
    if old.requests_remembered != state.requests_remembered:  # a new decision, not the answer to a resend
        assert remembered is not None and (remembered.ok, remembered.code) == (False, result.code)
        assert state.requests_remembered == old.requests_remembered + 1


def test_a_liquidation_with_a_bad_mark_price_cuts_no_order() -> None:
    """The liquidation read its mark price (and the fund's cover) only after it had marked the account's
    orders cut and sent their cancels; refused there, the cancels went out and the orders stayed cut."""
    meta = {"trace_id": "t", "causation_id": "c", "ts_ms": 1}
    state = AccountState(account_id=ACCT)
    handle(state, m.Deposit(**meta, request_id="d", account_id=ACCT, asset="USDT", amount="10000"))
    for cid in ("c1", "c2"):
        handle(state, m.PlaceOrder(**meta, request_id=cid, account_id=ACCT, symbol=SYM, side="BUY",
                                   order_type="LIMIT", price="50000", quantity="0.010", client_order_id=cid))
    first = min(state.orders)
    handle(state, m.FillLeg(**meta, account_id=ACCT, symbol=SYM, seq=1, trade_id=1, order_id=first, liquidity="MAKER",
                            side="BUY", price="50000.00", quantity="0.010", order_leaves="0"))
    before = to_store(state)
    outs = handle(state, m.Liquidate(**meta, request_id="liq", account_id=ACCT, symbol=SYM,
                                     position_version=state.positions[SYM].version, mark_price="not a price",
                                     attempt=1, max_loss="100"))
    (result,) = [o.msg for o in outs]
    assert isinstance(result, m.CommandResult) and not result.ok
    assert not any(o.cut for o in state.orders.values())
    assert without_memory_changes(state, from_store(before)) == before
