"""The risk process's decisions without a broker (the Kafka client is replaced by a recorder): the mark
on a steady tick and on a move, the liquidation check on a move, the insurance fund's cover on later
attempts, and ADL at once when the fund has nothing to give."""

from __future__ import annotations

from typing import Any

import pytest

from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.contracts.instruments import instrument
from perpline.risk import runner, state

SYM = "BTCUSDT-PERP"
BTC = instrument(SYM)
T0 = 1_800_000_000_000  # a funding boundary is far away
META = {"trace_id": "", "causation_id": "t"}


class Recorder:
    def __init__(self, *_: Any, **__: Any) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, value))

    def flush(self, *_: Any) -> int:
        return 0

    def poll(self, *_: Any) -> int:
        return 0


@pytest.fixture
def risk(monkeypatch: pytest.MonkeyPatch) -> runner.Risk:
    monkeypatch.setattr(runner, "Consumer", lambda *_a, **_k: None)
    monkeypatch.setattr(runner, "Producer", Recorder)
    monkeypatch.setenv("PERPLINE_FUNDING_INTERVAL_S", "28800")
    r = runner.Risk("unused:9092", 1000)
    seq = 0
    for order_id, side, price in ((1, "BUY", "49990"), (2, "SELL", "50010")):  # a two-sided book around 50000
        seq += 1
        r.state.on_matcher_event(m.OrderRested(**META, ts_ms=T0, symbol=SYM, seq=seq, order_id=order_id, account_id=9,
                                               side=side, price=price, leaves="1.000"))  # type: ignore[arg-type]
    index(r, "50000", T0)
    return r


def index(r: runner.Risk, price: str, ts_ms: int) -> None:
    r.state.on_index(m.IndexPrice(**META, ts_ms=ts_ms, symbol=SYM, price=price, source="test"))


def position(r: runner.Risk, account: int, size: str, cost: str, margin: str, version: int = 1) -> None:
    r.state.on_position(m.PositionSnapshot(**META, ts_ms=T0, account_id=account, symbol=SYM, size=size,
                                           entry_price="50000", margin=margin, leverage=100, version=version, cost=cost))


def traded(r: runner.Risk, buyer: int, seller: int, qty: str, price: str = "49000") -> None:
    """A trade on matcher.events: what the risk process derives sizes from (the snapshots must agree)."""
    s = r.state.symbols[SYM]
    r.state.on_matcher_event(m.Trade(**META, ts_ms=T0, symbol=SYM, seq=s.last_seq + 1, trade_id=s.last_seq + 1,
                                     price=price, quantity=qty, taker_side="BUY", taker_order_id=100 + s.last_seq,
                                     taker_account_id=buyer, taker_leaves="0", maker_order_id=200 + s.last_seq,
                                     maker_account_id=seller, maker_leaves="0"))


def done(r: runner.Risk, account: int, version: int, attempt: int, filled: str = "0.000") -> None:
    """The accounts processor's word that a liquidation order closed."""
    r.state.on_position(m.LiquidationOrderDone(**META, ts_ms=T0, account_id=account, symbol=SYM, order_id=1,
                                               client_order_id=f"liq-{version}-{attempt}", filled=filled))


def taken(r: runner.Risk, logical: str) -> list[Any]:
    """The messages produced on `logical` since the last call."""
    producer: Recorder = r.producer  # type: ignore[assignment]
    topic = r.topics[logical]
    found = [codec.decode(logical, v) for t, v in producer.sent if t == topic]
    producer.sent = [(t, v) for t, v in producer.sent if t != topic]
    return found


def test_the_mark_is_published_every_tick_and_on_a_move_of_a_basis_point(risk: runner.Risk) -> None:
    risk.tick(T0)
    (first,) = taken(risk, "prices.mark")
    assert (first.mark_price, first.causation_id) == ("50000.00", f"tick:{T0}")
    risk.on_change(T0 + 50)
    assert taken(risk, "prices.mark") == []  # nothing moved
    index(risk, "50100", T0 + 60)
    risk.on_change(T0 + 70)
    assert taken(risk, "prices.mark") == []  # within MARK_MIN_GAP_MS of the last computation
    risk.on_change(T0 + 150)
    (moved,) = taken(risk, "prices.mark")
    assert (moved.mark_price, moved.causation_id) == ("50100.00", f"change:{T0 + 150}")
    index(risk, "50102", T0 + 200)  # 0.004 %: recomputed, not published
    risk.on_change(T0 + 300)
    assert taken(risk, "prices.mark") == [] and risk.state.symbols[SYM].mark_ticks == BTC.parse_price("50102")
    risk.tick(T0 + 1000)  # the tick publishes regardless (its new premium sample moves the funding term)
    assert [x.causation_id for x in taken(risk, "prices.mark")] == [f"tick:{T0 + 1000}"]


def test_a_move_liquidates_at_once_and_an_empty_fund_means_adl(risk: runner.Risk) -> None:
    position(risk, 1, "0.100", "5000", "50")  # 100x long: liquidation price about 49,700
    position(risk, 2, "-0.100", "5000", "1000")  # the short ADL will trade it with
    traded(risk, 1, 2, "0.100")
    risk.tick(T0)
    assert taken(risk, "account.commands") == []
    index(risk, "49000", T0 + 10)
    risk.on_change(T0 + 200)  # before the next tick
    (liq,) = taken(risk, "account.commands")
    assert (type(liq), liq.account_id, liq.attempt, liq.max_loss) == (m.Liquidate, 1, 0, "")
    risk.tick(T0 + 1000)
    assert taken(risk, "account.commands") == []  # the retry waits LIQUIDATION_RETRY_MS
    risk.tick(T0 + 200 + runner.LIQUIDATION_RETRY_MS)
    assert taken(risk, "account.commands") == []  # ... and for the order to close
    done(risk, 1, 1, 0)  # expired: no taker at the bankruptcy price, and the fund is empty
    risk.tick(T0 + 400 + runner.LIQUIDATION_RETRY_MS)
    (record,) = taken(risk, "funding.rounds")
    assert isinstance(record, m.AdlTrade) and record.bankrupt_account == 1 and record.fills == [(2, "0.100")]
    legs = taken(risk, "account.commands")
    assert sorted((type(c), c.account_id, c.side, c.bankrupt) for c in legs) == [
        (m.Deleverage, 1, "SELL", True), (m.Deleverage, 2, "BUY", False)]


def test_later_attempts_offer_what_the_fund_holds_less_what_others_may_take(risk: runner.Risk) -> None:
    for account in (1, 3):
        position(risk, account, "0.100", "5000", "50")
        traded(risk, account, 2, "0.100")
    position(risk, 2, "-0.200", "10000", "2000")
    risk.state.on_position(m.InsuranceFundMoved(**META, ts_ms=T0, account_id=7, symbol=SYM, asset="USDT",
                                                amount="30", cause="earlier"))
    risk.state.on_position(m.InsuranceFundMoved(**META, ts_ms=T0, account_id=8, symbol=SYM, asset="USDT",
                                                amount="-5", cause="earlier"))
    index(risk, "49000", T0)
    risk.tick(T0)
    assert [(c.account_id, c.attempt) for c in taken(risk, "account.commands")] == [(1, 0), (3, 0)]
    done(risk, 1, 1, 0)
    done(risk, 3, 1, 0)
    risk.tick(T0 + runner.LIQUIDATION_RETRY_MS)
    first, *rest = taken(risk, "account.commands")
    assert (first.account_id, first.attempt, first.max_loss) == (1, 1, "25.00000000")  # 30 - 5: the whole fund
    # account 3's attempt 1 finds the fund promised to account 1: ADL instead
    assert [(type(c), c.account_id) for c in rest] == [(m.Deleverage, 3), (m.Deleverage, 2)]
    assert [r.bankrupt_account for r in taken(risk, "funding.rounds")] == [3]


def test_no_adl_while_a_fill_is_on_its_way(risk: runner.Risk) -> None:
    """The liquidation order filled at the matcher, but the position snapshot has not caught up: the
    account's trade-derived size is already flat, so nothing more is done to it."""
    position(risk, 1, "0.100", "5000", "50")
    position(risk, 2, "-0.100", "5000", "1000")
    traded(risk, 1, 2, "0.100")
    index(risk, "49000", T0)
    risk.tick(T0)
    assert [c.attempt for c in taken(risk, "account.commands")] == [0]
    traded(risk, 4, 1, "0.100", "47500")  # the liquidation IOC sold to account 4
    risk.tick(T0 + runner.LIQUIDATION_STUCK_MS)  # no LiquidationOrderDone seen for a long time, still
    assert taken(risk, "account.commands") == [] and taken(risk, "funding.rounds") == []
    done(risk, 1, 1, 0, filled="0.100")
    position(risk, 1, "0.000", "0", "0", version=2)  # the snapshot arrives: the position left the book
    risk.tick(T0 + runner.LIQUIDATION_STUCK_MS + 5000)
    assert taken(risk, "account.commands") == [] and taken(risk, "funding.rounds") == []


def test_a_full_memory_of_attempts_forgets_only_finished_ones(risk: runner.Risk) -> None:
    """Past its bound the memory of sent attempts forgets those whose position moved on and whose cover is
    no longer reserved; the attempt in flight keeps its number and the fund cover promised to it."""
    position(risk, 1, "0.100", "5000", "50")
    position(risk, 2, "-0.100", "5000", "1000")
    traded(risk, 1, 2, "0.100")
    risk.state.on_position(m.InsuranceFundMoved(**META, ts_ms=T0, account_id=7, symbol=SYM, asset="USDT",
                                                amount="30", cause="earlier"))
    index(risk, "49000", T0)
    risk.tick(T0)
    assert [c.attempt for c in taken(risk, "account.commands")] == [0]
    done(risk, 1, 1, 0)
    long_ago = T0 - 10 * runner.LIQUIDATION_RETRY_MS
    for i in range(runner.MAX_SENT_REMEMBERED + 1):  # finished: accounts without a position, sent long ago
        risk.sent[(SYM, 10_000 + i, 1)] = (0, long_ago, 0)
    now = T0 + runner.LIQUIDATION_RETRY_MS
    risk.tick(now)
    (liq,) = taken(risk, "account.commands")
    assert (liq.attempt, liq.max_loss) == (1, "30.00000000")
    assert len(risk.sent) <= runner.MAX_SENT_REMEMBERED
    attempt, sent_ms, cover = risk.sent[(SYM, 1, 1)]
    assert (attempt, sent_ms) == (1, now) and cover > 0
    assert risk.fund_cover("USDT", (SYM, 3, 1), now + 1) == 0  # the fund is still promised to account 1


def test_a_full_memory_of_closed_liquidation_orders_keeps_those_of_current_positions(risk: runner.Risk) -> None:
    position(risk, 1, "0.100", "5000", "50")  # version 1: its attempt 0 closed, the next one will ask
    done(risk, 1, 1, 0)
    for i in range(state.MAX_DONE_REMEMBERED):  # closed orders of positions that are gone
        done(risk, 10_000 + i, 1, 0)
    assert (SYM, 1, 1, 0) in risk.state.liquidation_done
    assert len(risk.state.liquidation_done) <= state.MAX_DONE_REMEMBERED
    position(risk, 1, "0.050", "2500", "50", version=2)  # moved on: now it may go
    for i in range(state.MAX_DONE_REMEMBERED // 5):
        done(risk, 200_000 + i, 1, 0)
    assert (SYM, 1, 1, 0) not in risk.state.liquidation_done
