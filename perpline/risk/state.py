"""What the risk process knows, rebuilt from topics on every start (no state of its own on disk):

- per symbol, from `matcher.events` (seq-deduplicated): the resting book's price levels (best bid and
  ask), the last trade price, and every account's position size from the trades themselves, so the
  sizes at any cut of the stream sum to exactly zero (funding is computed at such a cut);
- the latest index price (`prices.index`);
- every position's margin, cost and version as the accounts processor reports them (`positions`),
  ordered by liquidation price (perpline.risk.liquidations), and the insurance fund's balance per
  asset from the fund's moves reported there;
- the last funding time already settled per symbol (`funding.rounds`).
Pure: no I/O; the runner feeds it decoded messages.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from perpline.contracts import ids, sequence
from perpline.contracts import messages as m
from perpline.contracts.instruments import Instrument, load_catalog
from perpline.contracts.units import parse_amount
from perpline.risk import formulas as f
from perpline.risk.liquidations import LiquidationBook
from perpline.risk.memory import FinishedFirst

MAX_BASIS_SAMPLES = 1800  # moving average of the basis over the last 30 minutes of 1 s ticks
MAX_PREMIUM_SAMPLES = 100_000  # per funding interval
MAX_DONE_REMEMBERED = 100_000  # closed liquidation orders remembered (past it, those of positions that moved on go)


@dataclass
class SymbolState:
    inst: Instrument
    last_seq: int = 0
    resting: dict[int, tuple[bool, int, int]] = field(default_factory=dict)  # order -> (is_buy, price, lots)
    bids: dict[int, int] = field(default_factory=dict)  # price ticks -> lots
    asks: dict[int, int] = field(default_factory=dict)
    last_trade_ticks: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # account -> signed lots, from trades
    index_ticks: int = 0
    index_ms: int = 0
    premiums: list[int] = field(default_factory=list)
    basis: deque[int] = field(default_factory=lambda: deque(maxlen=MAX_BASIS_SAMPLES))
    last_round_ms: int = 0
    rate_e8: int = 0  # the current estimate (published with the mark)
    mark_ticks: int = 0
    computed_ms: int = 0  # when the mark was last computed
    published_ticks: int = 0  # the last mark published on prices.mark
    dirty: bool = False  # the book, a trade or the index moved since the mark was computed
    liquidations: LiquidationBook = field(default_factory=LiquidationBook)
    positions: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)  # account -> (size, cost, margin, version)

    def best_bid(self) -> int:
        return max(self.bids) if self.bids else 0

    def best_ask(self) -> int:
        return min(self.asks) if self.asks else 0


class RiskState:
    def __init__(self) -> None:
        self.symbols = {s: SymbolState(inst) for s, inst in load_catalog().instruments.items()}
        self.fund: dict[str, int] = {}  # asset -> the insurance fund's balance, summed from InsuranceFundMoved
        # (symbol, account, version, attempt) of the liquidation orders that closed
        self.liquidation_done: FinishedFirst[tuple[str, int, int, int], None] = FinishedFirst(MAX_DONE_REMEMBERED)

    def get(self, symbol: str) -> SymbolState | None:
        return self.symbols.get(symbol)

    # --- inputs ----------------------------------------------------------------------------------

    def on_matcher_event(self, ev: m.Msg) -> None:
        s = self.get(getattr(ev, "symbol", ""))
        if s is None:
            return
        verdict = sequence.accept(s.last_seq, ev.seq)  # type: ignore[attr-defined]
        if not verdict.apply:
            return
        s.last_seq = verdict.last_seq
        s.dirty = True
        inst = s.inst
        if isinstance(ev, m.OrderRested):
            self._rest(s, ev.order_id, ev.side == "BUY", inst.parse_price(ev.price), inst.parse_qty(ev.leaves))
        elif isinstance(ev, m.Trade):
            price, lots = inst.parse_price(ev.price), inst.parse_qty(ev.quantity)
            s.last_trade_ticks = price
            signed = lots if ev.taker_side == "BUY" else -lots
            s.sizes[ev.taker_account_id] = s.sizes.get(ev.taker_account_id, 0) + signed
            s.sizes[ev.maker_account_id] = s.sizes.get(ev.maker_account_id, 0) - signed
            for account in (ev.taker_account_id, ev.maker_account_id):
                if s.sizes[account] == 0:
                    del s.sizes[account]
            self._reduce(s, ev.maker_order_id, inst.parse_qty(ev.maker_leaves, allow_zero=True))
        elif isinstance(ev, (m.OrderCancelled, m.OrderExpired)):
            self._reduce(s, ev.order_id, 0)
        elif isinstance(ev, m.OrderAmended):
            self._amended(s, ev)

    def _amended(self, s: SymbolState, ev: m.OrderAmended) -> None:
        """In place (same price, less quantity): the order keeps its level with fewer lots. Otherwise it
        left its level; an OrderRested follows if it rests again."""
        found = s.resting.get(ev.order_id)
        if found is None:
            return
        price, leaves = s.inst.parse_price(ev.price), s.inst.parse_qty(ev.leaves, allow_zero=True)
        in_place = price == found[1] and leaves <= found[2]
        self._reduce(s, ev.order_id, leaves if in_place else 0)

    def _rest(self, s: SymbolState, order_id: int, is_buy: bool, price: int, lots: int) -> None:
        self._reduce(s, order_id, 0)  # an order rests at one place only
        s.resting[order_id] = (is_buy, price, lots)
        levels = s.bids if is_buy else s.asks
        levels[price] = levels.get(price, 0) + lots

    def _reduce(self, s: SymbolState, order_id: int, leaves: int) -> None:
        found = s.resting.get(order_id)
        if found is None:
            return
        is_buy, price, lots = found
        levels = s.bids if is_buy else s.asks
        levels[price] -= lots - leaves
        if levels[price] <= 0:
            del levels[price]
        if leaves:
            s.resting[order_id] = (is_buy, price, leaves)
        else:
            del s.resting[order_id]

    def on_index(self, ev: m.IndexPrice) -> None:
        s = self.get(ev.symbol)
        if s is not None:
            s.index_ticks, s.index_ms = s.inst.parse_price(ev.price), ev.ts_ms
            s.dirty = True

    def on_position(self, ev: m.PositionSnapshot | m.InsuranceFundMoved | m.LiquidationOrderDone) -> None:
        if isinstance(ev, m.InsuranceFundMoved):
            self.fund[ev.asset] = self.fund.get(ev.asset, 0) + parse_amount(ev.amount, allow_negative=True)
            return
        if isinstance(ev, m.LiquidationOrderDone):
            parsed = ids.parse_liquidation_client_id(ev.client_order_id)
            if parsed is not None:
                self.liquidation_done[(ev.symbol, ev.account_id, *parsed)] = None
                self.liquidation_done.forget_finished(lambda key, _: self.moved_on(*key[:3]))
            return
        s = self.get(ev.symbol)
        if s is None:
            return
        size = s.inst.parse_signed_qty(ev.size)
        cost, margin = parse_amount(ev.cost), parse_amount(ev.margin)
        liq = f.liquidation_ticks(s.inst, size, cost, margin) if size else 0
        s.liquidations.upsert(ev.account_id, size, liq, ev.version)
        if size:
            s.positions[ev.account_id] = (size, cost, margin, ev.version)
        else:
            s.positions.pop(ev.account_id, None)

    def moved_on(self, symbol: str, account: int, version: int) -> bool:
        """The position is no longer at `version` (a later one, or closed): nothing will ask about that
        version's liquidation again (the liquidation book holds each position's current version only)."""
        s = self.get(symbol)
        now = s.positions.get(account) if s is not None else None
        return now is None or now[3] != version

    def on_round(self, ev: m.FundingRound | m.AdlTrade) -> None:
        s = self.get(ev.symbol)
        if s is not None and isinstance(ev, m.AdlTrade):
            self.apply_adl(s, ev)
        elif s is not None and ev.funding_time_ms > s.last_round_ms:
            s.last_round_ms = ev.funding_time_ms
            s.premiums.clear()

    def apply_adl(self, s: SymbolState, ev: m.AdlTrade) -> None:
        """An ADL decision moves sizes as a trade would (the trade stream does not carry it)."""
        sign = 1 if ev.side == "BUY" else -1
        for account, qty in ev.fills:
            lots = s.inst.parse_qty(qty)
            for acct, delta in ((ev.bankrupt_account, sign * lots), (account, -sign * lots)):
                s.sizes[acct] = s.sizes.get(acct, 0) + delta
                if s.sizes[acct] == 0:
                    del s.sizes[acct]
