"""The read model's state as one msgpack document: what a checkpoint holds (perpline.api.checkpoint).

Every collection of the read model is bounded (closed orders, fills and funding per account, trades,
depth changes and candles per symbol, tracked matcher orders, command results), so the document's
size depends on the number of accounts and symbols, not on the length of the history behind it.
A replica that restores it and then consumes the topics from the positions stored with it holds
exactly what a replica that replayed everything holds: the same structures, field for field.

Plain msgspec structs (no pickle): a checkpoint is data read from a topic, never code.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import msgspec

from perpline.api.views import (
    MAX_CLOSED_ORDERS_PER_ACCOUNT,
    MAX_DEPTH_CHANGES,
    MAX_FUNDING_PER_ACCOUNT,
    MAX_TRADES_PER_SYMBOL,
    AccountView,
    BookMirror,
    MatcherOrder,
    fill_key,
    funding_key,
)
from perpline.contracts import messages as m
from perpline.market.candles import Candle, CandleSet

FORMAT = 1  # bumped when the document changes shape: an older or newer checkpoint is not loaded


class AccountState(msgspec.Struct, array_like=True):
    account_id: int
    balances: list[m.BalanceChanged]
    open_orders: list[m.OrderView]
    closed_orders: list[m.OrderView]  # oldest first, as the view keeps them
    positions: list[m.PositionChanged]
    fills: list[m.FillRecorded]
    funding: list[m.FundingApplied]


class DayState(msgspec.Struct, array_like=True):
    buckets: list[Candle]
    highs: list[tuple[int, int]]
    lows: list[tuple[int, int]]
    volume_lots: int
    quote_minor: int
    trades: int
    last_lots: int


class BookState(msgspec.Struct, array_like=True):
    symbol: str
    last_seq: int
    resting: list[tuple[int, str, str, int]]  # (order id, side, price, leaves lots), in insertion order
    levels: list[tuple[str, str, int]]  # (side, price, lots), in insertion order
    changes: list[tuple[int, str, str, int]]
    trades: list[m.Trade]
    candles: dict[str, list[Candle]]
    day: DayState


class TrackedOrder(msgspec.Struct, array_like=True):
    order_id: int
    filled_lots: int
    rested: bool
    done: bool
    code: int
    makers: list[tuple[int, int]]
    amends: int
    amend_code: int
    terms: tuple[str, str] | None


class State(msgspec.Struct):
    format: int
    applied: int
    accounts: list[AccountState]
    books: list[BookState]
    marks: list[m.MarkPrice]
    mark_candles: dict[str, dict[str, list[Candle]]]
    rounds: dict[str, list[m.FundingRound]]
    matcher_orders: list[TrackedOrder]  # oldest first (the eviction order)
    results: list[m.CommandResult]  # oldest first (the eviction order)


@dataclass
class Restored:
    """The read model's collections rebuilt from a State (perpline.api.readmodel.ReadModel.restore)."""

    applied: int
    accounts: dict[int, AccountView]
    books: dict[str, BookMirror]
    marks: dict[str, m.MarkPrice]
    mark_candles: dict[str, CandleSet]
    rounds: dict[str, deque[m.FundingRound]]
    matcher_orders: OrderedDict[int, MatcherOrder]
    results: OrderedDict[tuple[int, str], m.CommandResult]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(State)


def encode(state: State) -> bytes:
    return _encoder.encode(state)


def decode(blob: bytes) -> State:
    """The State in `blob`; ValueError for another format (the caller then replays from the start)."""
    state = _decoder.decode(blob)
    if state.format != FORMAT:
        raise ValueError(f"checkpoint format {state.format}, this code reads {FORMAT}")
    return state


# --- capture -------------------------------------------------------------------------------------
def capture(rm: Any) -> State:
    """The state of read model `rm` (perpline.api.readmodel.ReadModel; its consumer thread, the only
    writer of every part, calls this between two batches)."""
    prices = rm.prices
    return State(
        format=FORMAT, applied=rm.applied,
        accounts=[_account(acct, view) for acct, view in rm.accounts.items()],
        books=[_book(symbol, book) for symbol, book in rm.books.items()],
        marks=list(prices.marks.values()),
        mark_candles={symbol: _candles(cs) for symbol, cs in prices.mark_candles.items()},
        rounds={symbol: list(rounds) for symbol, rounds in prices.rounds.items()},
        matcher_orders=[TrackedOrder(oid, o.filled_lots, o.rested, o.done, o.code, list(o.makers), o.amends,
                                     o.amend_code, o.terms) for oid, o in rm.tracking.items()],
        results=list(rm.results.values()),
    )


def _account(account_id: int, view: AccountView) -> AccountState:
    return AccountState(account_id, list(view.balances.values()), list(view.open_orders.values()),
                        list(view.closed_orders.values()), list(view.positions.values()), list(view.fills),
                        list(view.funding))


def _book(symbol: str, book: BookMirror) -> BookState:
    day = book.day
    return BookState(symbol, book.last_seq, [(oid, *entry) for oid, entry in book.resting.items()],
                     [(side, price, lots) for (side, price), lots in book.levels.items()], list(book.changes),
                     list(book.trades), _candles(book.candles),
                     DayState(list(day.buckets), list(day.highs), list(day.lows), day.volume_lots, day.quote_minor,
                              day.trades, day.last_lots))


def _candles(candles: CandleSet) -> dict[str, list[Candle]]:
    return {name: list(series.candles) for name, series in candles.series.items()}


# --- restore -------------------------------------------------------------------------------------
def restore(state: State, max_rounds: int) -> Restored:
    """The read model's collections as they were when `state` was captured."""
    return Restored(
        applied=state.applied,
        accounts={a.account_id: _account_view(a) for a in state.accounts},
        books={b.symbol: _book_mirror(b) for b in state.books},
        marks={mark.symbol: mark for mark in state.marks},
        mark_candles={symbol: _candle_set(c) for symbol, c in state.mark_candles.items()},
        rounds={symbol: deque(rounds, maxlen=max_rounds) for symbol, rounds in state.rounds.items()},
        matcher_orders=OrderedDict((t.order_id, MatcherOrder(t.filled_lots, t.rested, t.done, t.code, list(t.makers),
                                                             t.amends, t.amend_code, t.terms))
                                   for t in state.matcher_orders),
        results=OrderedDict(((r.account_id, r.request_id), r) for r in state.results),
    )


def _account_view(a: AccountState) -> AccountView:
    view = AccountView(
        balances={b.asset: b for b in a.balances},
        open_orders={o.order_id: o for o in a.open_orders},
        closed_orders=OrderedDict((o.order_id, o) for o in a.closed_orders),
        positions={p.symbol: p for p in a.positions},
        fills=deque(a.fills, maxlen=MAX_CLOSED_ORDERS_PER_ACCOUNT),
        funding=deque(a.funding, maxlen=MAX_FUNDING_PER_ACCOUNT),
    )
    view.fill_keys = {fill_key(f) for f in view.fills}
    view.funding_keys = {funding_key(f) for f in view.funding}
    return view


def _book_mirror(b: BookState) -> BookMirror:
    book = BookMirror(
        resting={oid: (side, price, lots) for oid, side, price, lots in b.resting},
        levels={(side, price): lots for side, price, lots in b.levels},
        changes=deque(b.changes, maxlen=MAX_DEPTH_CHANGES),
        trades=deque(b.trades, maxlen=MAX_TRADES_PER_SYMBOL),
        candles=_candle_set(b.candles),
        last_seq=b.last_seq,
    )
    day = book.day
    day.buckets.extend(b.day.buckets)
    day.highs.extend(b.day.highs)
    day.lows.extend(b.day.lows)
    day.volume_lots, day.quote_minor, day.trades, day.last_lots = (b.day.volume_lots, b.day.quote_minor,
                                                                   b.day.trades, b.day.last_lots)
    return book


def _candle_set(candles: dict[str, list[Candle]]) -> CandleSet:
    restored = CandleSet()
    for name, rows in candles.items():
        series = restored.series.get(name)
        if series is not None:
            series.candles.extend(rows)
    return restored

