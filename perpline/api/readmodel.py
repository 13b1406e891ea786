"""Read models fed by topics: account state from account.events, book and trades from matcher.events.

One consumer thread applies messages in topic order; request handlers read under a lock.
Command results are correlated to waiting requests by request id.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from copy import copy
from decimal import Decimal
from itertools import islice
from typing import Any

import msgspec
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from prometheus_client import Counter, Gauge

from perpline.accounts.order_status import OPEN
from perpline.api import checkpoint, snapshot, streamdelay
from perpline.api.views import (
    MAX_CLOSED_ORDERS_PER_ACCOUNT,
    MAX_FUNDING_PER_ACCOUNT,
    AccountView,
    BookMirror,
    MatcherOrder,
    fill_key,
    funding_key,
)
from perpline.auth.registry import KeyRegistry
from perpline.config import fetch_config, kafka_config
from perpline.consume import poll_batch
from perpline.contracts import codec, sequence
from perpline.contracts import messages as m
from perpline.contracts.instruments import load_catalog
from perpline.market.candles import Candle, CandleSet, DayStats
from perpline.obs import LagWatcher

log = logging.getLogger("perpline.api.readmodel")

MAX_RESULTS = 100_000
MAX_FUNDING_ROUNDS = 1000  # per symbol
POLL_BATCH = 500
MAX_TRACKED_ORDERS = 200_000
MAX_MAKERS_TRACKED = 1000
MAX_WAKEUPS = 100_000  # requests waiting for the views to change (each one's future, re-armed per change)
MAX_ACCOUNT_FEED = 100_000  # applied account events kept for the user-data streams (perpline.api.fstream)
CHECKPOINT_LOADED = Gauge("perpline_api_checkpoint_loaded_events",
                          "source records behind the checkpoint the read model started from (0: replayed all)")
READY_SECONDS = Gauge("perpline_api_readmodel_ready_seconds", "from the read model's start to caught up")
CHECKPOINTS_WRITTEN = Counter("perpline_api_checkpoints_written_total", "read-model checkpoints published")


class ReadModel:
    def __init__(self, bootstrap: str, topics: dict[str, str], registry: KeyRegistry | None = None,
                 checkpoint_events: int = 0, from_checkpoint: bool = False) -> None:
        """`from_checkpoint`: start from the newest checkpoint on api.checkpoints (perpline.api.checkpoint)
        instead of replaying the topics from offset 0; `checkpoint_events`: write one when the views are
        that many source records past the newest one (0: never)."""
        self._bootstrap = bootstrap
        self.registry = registry
        self.matcher_orders: OrderedDict[int, MatcherOrder] = OrderedDict()
        self._topics = topics  # logical name -> physical name
        self._lock = threading.Lock()
        self.accounts: dict[int, AccountView] = {}
        self.books: dict[str, BookMirror] = {}
        self.marks: dict[str, m.MarkPrice] = {}  # the risk process's latest mark per symbol
        self.mark_candles: dict[str, CandleSet] = {}
        self.rounds: dict[str, deque[m.FundingRound]] = {}
        # keyed by (account, request id): a request id (an Idempotency-Key) is the client's, unique per account only
        self._results: OrderedDict[tuple[int, str], m.CommandResult] = OrderedDict()
        self._waiters: dict[tuple[int, str], list[tuple[asyncio.AbstractEventLoop, asyncio.Future[m.CommandResult]]]] = {}
        # requests waiting for any change of the views (settled, amended): woken after each applied batch
        self._wakeups: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readmodel", daemon=True)
        self.caught_up = threading.Event()
        self._lag = LagWatcher("perpline-api-readmodel")
        self.applied = 0
        # the account events the views applied (redeliveries left out), numbered from 1, for the user-data streams
        self._feed: deque[tuple[int, Any]] = deque(maxlen=MAX_ACCOUNT_FEED)
        self._feed_n = 0
        self._from_checkpoint = from_checkpoint
        self._checkpoint_every = checkpoint_events
        self._checkpoint_at = 0  # source records behind the newest checkpoint known here
        self._writing = threading.Event()  # a checkpoint is being published (one at a time)
        # next offset of every partition of the source topics: the point the views are at
        self._positions: dict[str, dict[int, int]] = {}
        self._started = time.monotonic()

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _consumer(self) -> Consumer:
        consumer = Consumer(kafka_config(self._bootstrap, **{
            "group.id": "perpline-api-readmodel", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_committed", "enable.partition.eof": True,
            **fetch_config(),
        }))
        start = self._start_positions()
        parts = []
        for logical in ("account.events", "matcher.events", "auth.keys", "funding.rounds", "prices.mark"):
            name = self._topics[logical]
            meta = consumer.list_topics(name, timeout=10).topics[name]
            for p in meta.partitions:  # the key registry always from the start (it is small), the rest from
                offset = start.get(name, {}).get(p, 0)  # the checkpoint restored, if any
                parts.append(TopicPartition(name, p, offset))
                if logical != "auth.keys":
                    self._positions.setdefault(name, {})[p] = offset
        consumer.assign(parts)
        self._lag.watch(consumer, parts)
        self._pending_eof = {(tp.topic, tp.partition) for tp in parts}
        return consumer

    def _start_positions(self) -> dict[str, dict[int, int]]:
        """Restore the newest checkpoint and return its positions; {} (replay everything) without one,
        or when it cannot be read whole: a replica that cannot start quickly still starts right."""
        if not self._from_checkpoint:
            return {}
        topic = self._topics["api.checkpoints"]
        manifest = checkpoint.latest_manifest(self._bootstrap, topic)
        if manifest is None:
            return {}
        try:
            restored = snapshot.restore(snapshot.decode(checkpoint.load(self._bootstrap, topic, manifest)),
                                        MAX_FUNDING_ROUNDS)
        except (RuntimeError, ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("checkpoint not loaded; replaying from the start",
                        extra={"checkpoint": manifest.checkpoint_id, "error": str(exc)})
            return {}
        with self._lock:
            self.applied, self.accounts, self.books = restored.applied, restored.accounts, restored.books
            self.marks, self.mark_candles, self.rounds = restored.marks, restored.mark_candles, restored.rounds
            self.matcher_orders, self._results = restored.matcher_orders, restored.results
        self._checkpoint_at = manifest.events()
        CHECKPOINT_LOADED.set(manifest.events())
        log.info("read model restored from a checkpoint", extra={
            "checkpoint": manifest.checkpoint_id, "events": manifest.events(), "bytes": manifest.state_bytes,
            "ms": round((time.monotonic() - self._started) * 1000)})
        return manifest.positions

    def _run(self) -> None:
        consumer = self._consumer()
        names = {v: k for k, v in self._topics.items()}
        try:
            while not self._stop.is_set():
                batch = poll_batch(consumer, POLL_BATCH, 0.2)
                for msg in batch:
                    self._on_message(msg, names)
                if batch:
                    self._wake_all()
                    self._maybe_checkpoint()
        finally:
            self._lag.unwatch()
            consumer.close()

    def _on_message(self, msg: Any, names: dict[str, str]) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                self._pending_eof.discard((msg.topic(), msg.partition()))
                if not self._pending_eof and not self.caught_up.is_set():
                    READY_SECONDS.set(time.monotonic() - self._started)
                    self.caught_up.set()
            else:
                log.warning("consumer error", extra={"error": str(err)})
            return
        logical = names.get(msg.topic(), "")
        if logical != "auth.keys":
            self._positions.setdefault(msg.topic(), {})[msg.partition()] = msg.offset() + 1
        try:
            value = codec.decode(logical, msg.value())
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError) as exc:
            log.error("undecodable message skipped", extra={"topic": msg.topic(), "offset": msg.offset(), "error": str(exc)})
            return
        if logical == "auth.keys":
            if self.registry is not None:
                self.registry.apply(value, msg.offset())
            return
        if logical in ("prices.mark", "funding.rounds"):
            self._apply_price(value)
            return
        with self._lock:
            self.applied += 1
            if logical == "account.events":
                self._apply_account(value)
            else:
                self._apply_market(value)
        if isinstance(value, m.Trade):
            _trade_timed(value.ts_ms, msg.timestamp())
        if isinstance(value, m.CommandResult):
            self._resolve(value)

    # --- checkpoints ---------------------------------------------------------------------
    def _maybe_checkpoint(self) -> None:
        """Between two batches (the views then match the positions exactly), capture a checkpoint when
        the views are `checkpoint_events` source records past the newest one, whoever wrote that (the
        replicas share the topic: one checkpoint per interval, not one per replica)."""
        if not self._checkpoint_every or not self.caught_up.is_set() or self._writing.is_set():
            return
        if checkpoint.events_at(self._positions) - self._checkpoint_at < self._checkpoint_every:
            return
        newest = checkpoint.latest_manifest(self._bootstrap, self._topics["api.checkpoints"])
        if newest is not None:
            self._checkpoint_at = max(self._checkpoint_at, newest.events())
        if checkpoint.events_at(self._positions) - self._checkpoint_at < self._checkpoint_every:
            return
        positions = {topic: dict(parts) for topic, parts in self._positions.items()}
        blob = snapshot.encode(snapshot.capture(self))  # this thread alone changes the views: no lock
        self._checkpoint_at = checkpoint.events_at(positions)
        self._writing.set()
        threading.Thread(target=self._publish, args=(positions, blob), name="readmodel-checkpoint",
                         daemon=True).start()

    def _publish(self, positions: dict[str, dict[int, int]], blob: bytes) -> None:
        """Publish a captured checkpoint off the consumer thread (a failure only delays the next one)."""
        try:
            writer = checkpoint.Writer(self._bootstrap, self._topics["api.checkpoints"])
            try:
                manifest = writer.write(positions, blob)
            finally:
                writer.close()
            CHECKPOINTS_WRITTEN.inc()
            log.info("checkpoint written", extra={"checkpoint": manifest.checkpoint_id,
                                                  "events": manifest.events(), "bytes": len(blob)})
        except (RuntimeError, KafkaException) as exc:
            log.warning("checkpoint not written", extra={"error": str(exc)})
        finally:
            self._writing.clear()

    # --- applying ----------------------------------------------------------------------
    def _view(self, account_id: int) -> AccountView:
        view = self.accounts.get(account_id)
        if view is None:
            view = self.accounts[account_id] = AccountView()
        return view

    def _apply_account(self, ev: Any) -> None:
        if isinstance(ev, m.CommandResult):
            self._results[(ev.account_id, ev.request_id)] = ev
            while len(self._results) > MAX_RESULTS:
                self._results.popitem(last=False)
            return
        view = self._view(ev.account_id)
        applied = False
        if isinstance(ev, m.BalanceChanged):
            known = view.balances.get(ev.asset)
            applied = known is None or ev.version > known.version  # an older version is a redelivery
            if applied or ev.version == known.version:  # type: ignore[union-attr]
                view.balances[ev.asset] = ev
        elif isinstance(ev, m.OrderChanged):
            applied = _apply_order(view, ev.order)
        elif isinstance(ev, m.PositionChanged):
            known_position = view.positions.get(ev.symbol)
            applied = known_position is None or ev.version > known_position.version
            if applied or ev.version == known_position.version:  # type: ignore[union-attr]
                view.positions[ev.symbol] = ev
        elif isinstance(ev, m.FillRecorded):
            applied = _append_once(view.fills, view.fill_keys, fill_key, ev)
        elif isinstance(ev, m.FundingApplied):
            applied = _append_once(view.funding, view.funding_keys, funding_key, ev)
        if applied:
            self._feed_n += 1
            self._feed.append((self._feed_n, ev))

    def account_feed(self, after: int) -> tuple[int, list[Any] | None]:
        """(newest number, the applied account events numbered after `after`); None for the events when
        some of them were already forgotten (MAX_ACCOUNT_FEED): the reader lost events and starts over."""
        with self._lock:
            if after > self._feed_n or (self._feed and self._feed[0][0] > after + 1):
                return self._feed_n, None
            skip = len(self._feed) - (self._feed_n - after)
            return self._feed_n, [ev for _, ev in islice(self._feed, max(skip, 0), None)]

    def book_seq(self, symbol: str) -> int:
        """The matcher seq the symbol's book mirror is at: the update id of /fapi/v1/depth and its stream."""
        with self._lock:
            book = self.books.get(symbol)
            return 0 if book is None else book.last_seq

    def _apply_price(self, ev: Any) -> None:
        with self._lock:
            if isinstance(ev, m.MarkPrice):
                self.marks[ev.symbol] = ev
                inst = load_catalog().get(ev.symbol)
                if inst is not None:
                    self.mark_candles.setdefault(ev.symbol, CandleSet()).add(ev.ts_ms, inst.parse_price(ev.mark_price), 0, 0)
            elif isinstance(ev, m.FundingRound):
                self.rounds.setdefault(ev.symbol, deque(maxlen=MAX_FUNDING_ROUNDS)).append(ev)

    def mark(self, symbol: str) -> m.MarkPrice | None:
        with self._lock:
            return self.marks.get(symbol)

    def mark_ticks(self, symbol: str) -> int:
        """The mark price in ticks: the risk process's, else the last trade, else the mid, else 0."""
        inst = load_catalog().get(symbol)
        assert inst is not None
        mark = self.mark(symbol)
        if mark is not None:
            return inst.parse_price(mark.mark_price)
        recent = self.trades(symbol, 1)
        if recent:
            return inst.parse_price(recent[-1].price)
        bids, asks = self.depth(symbol, 1)
        if bids and asks:
            return (inst.parse_price(bids[0][0]) + inst.parse_price(asks[0][0])) // 2
        return 0

    def funding_rounds(self, symbol: str) -> list[m.FundingRound]:
        with self._lock:
            return list(self.rounds.get(symbol, ()))

    def _apply_market(self, ev: Any) -> None:
        book = self.books.setdefault(ev.symbol, BookMirror())
        verdict = sequence.accept(book.last_seq, ev.seq)
        if not verdict.apply:
            return  # a re-emitted event after a matcher restart
        book.last_seq = verdict.last_seq
        inst = load_catalog().get(ev.symbol)
        if inst is None:
            return
        self._track(inst, ev)
        if isinstance(ev, m.OrderRested):
            book.set_order(ev.order_id, (ev.side, ev.price, inst.parse_qty(ev.leaves)), ev.seq)
        elif isinstance(ev, m.Trade):
            book.trades.append(ev)
            price, lots = inst.parse_price(ev.price), inst.parse_qty(ev.quantity)
            quote = inst.notional(price, lots)
            book.candles.add(ev.ts_ms, price, lots, quote, ev.taker_side == "BUY", ev.trade_id)
            book.day.add(ev.ts_ms, price, lots, quote, ev.trade_id)
            maker = book.resting.get(ev.maker_order_id)
            if maker is not None:
                book.set_order(ev.maker_order_id, (maker[0], maker[1], inst.parse_qty(ev.maker_leaves, allow_zero=True)),
                               ev.seq)
        elif isinstance(ev, (m.OrderCancelled, m.OrderExpired)):
            book.set_order(ev.order_id, None, ev.seq)
        elif isinstance(ev, m.OrderAmended) and ev.order_id in book.resting:
            side, price, _ = book.resting[ev.order_id]
            in_place = price == ev.price  # smaller at the same price: same level (a re-queued order comes back
            leaves = inst.parse_qty(ev.leaves, allow_zero=True)  # with OrderRested)
            book.set_order(ev.order_id, (side, price, leaves) if in_place else None, ev.seq)

    def _track(self, inst: Any, ev: Any) -> None:
        tracked = self.matcher_orders
        if isinstance(ev, m.OrderAccepted):
            tracked[ev.order_id] = MatcherOrder()
            while len(tracked) > MAX_TRACKED_ORDERS:
                tracked.popitem(last=False)
        elif isinstance(ev, m.Trade):
            lots = inst.parse_qty(ev.quantity)
            taker = tracked.get(ev.taker_order_id)
            if taker is not None and len(taker.makers) < MAX_MAKERS_TRACKED:
                taker.makers.append((ev.maker_account_id, ev.maker_order_id))
            for order_id, leaves in ((ev.taker_order_id, ev.taker_leaves), (ev.maker_order_id, ev.maker_leaves)):
                state = tracked.get(order_id)
                if state is not None:
                    state.filled_lots += lots
                    state.done = state.done or inst.parse_qty(leaves, allow_zero=True) == 0
        elif isinstance(ev, m.OrderRested):
            state = tracked.get(ev.order_id)
            if state is not None:
                state.rested = True
        elif isinstance(ev, (m.OrderAmended, m.AmendRejected)):
            state = tracked.get(ev.order_id)
            if state is not None:
                state.amends += 1
                state.amend_code = ev.code if isinstance(ev, m.AmendRejected) else 0
                if isinstance(ev, m.OrderAmended):
                    state.terms = (ev.price, ev.quantity)
        elif isinstance(ev, (m.OrderCancelled, m.OrderExpired, m.OrderRejected)):
            state = tracked.get(ev.order_id)
            if state is None and isinstance(ev, m.OrderRejected):
                state = tracked[ev.order_id] = MatcherOrder()
            if state is not None:
                state.done = True
                state.code = ev.code

    def settled(self, account_id: int, order_id: int) -> bool:
        """True once the matcher has finished acting on the order's arrival (it rests or is done) and
        the account views -- the order's own and every maker's it traded against -- show exactly the
        fills and final status the matcher decided. Then a reply reflects the whole write."""
        with self._lock:
            state = self.matcher_orders.get(order_id)
            if state is None or not (state.rested or state.done):
                return False
            return self._reflects(account_id, order_id, state) and all(
                self._reflects(acct, maker_id, self.matcher_orders.get(maker_id)) for acct, maker_id in state.makers)

    def _reflects(self, account_id: int, order_id: int, state: MatcherOrder | None) -> bool:
        """The account view shows the matcher's fills and finished-ness of this order (lock held)."""
        if state is None:
            return True  # forgotten (bounded tracking): nothing left to compare
        view = self.accounts.get(account_id)
        order = None if view is None else view.open_orders.get(order_id) or view.closed_orders.get(order_id)
        if order is None:
            return False
        inst = load_catalog().get(order.symbol)
        assert inst is not None
        finished = order.status not in OPEN
        if state.terms is not None and not finished and (order.price, order.quantity) != state.terms:
            return False  # the account has not applied the matcher's amend yet
        return inst.parse_qty(order.filled, allow_zero=True) == state.filled_lots and finished == state.done

    def amends(self, order_id: int) -> tuple[int, int]:
        """(amends answered by the matcher, code of the last refused one) for an order."""
        with self._lock:
            state = self.matcher_orders.get(order_id)
            return (0, 0) if state is None else (state.amends, state.amend_code)

    async def wait_amended(self, account_id: int, order_id: int, answered_before: int, timeout_s: float) -> int:
        """Wait until the matcher answered one more amend of the order and the views show it; returns
        the refusal code (0: applied), or -1 if either has not happened within `timeout_s`."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        if not await self.wait_until(lambda: self.amends(order_id)[0] > answered_before, timeout_s):
            return -1
        if not await self.wait_settled(account_id, order_id, max(0.0, deadline - asyncio.get_running_loop().time())):
            return -1  # answered by the matcher, not yet in the views: not known to the caller either
        return self.amends(order_id)[1]

    def matcher_code(self, order_id: int) -> int:
        with self._lock:
            state = self.matcher_orders.get(order_id)
            return 0 if state is None else state.code

    def find_client_order(self, account_id: int, client_order_id: str) -> m.OrderView | None:
        with self._lock:
            view = self.accounts.get(account_id)
            if view is None:
                return None
            for order in [*view.open_orders.values(), *reversed(view.closed_orders.values())]:
                if order.client_order_id == client_order_id:
                    return order
            return None

    async def wait_settled(self, account_id: int, order_id: int, timeout_s: float) -> bool:
        return await self.wait_until(lambda: self.settled(account_id, order_id), timeout_s)

    async def wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait, without polling, until `done()` holds: re-checked each time the read model has applied
        a batch of events (a wakeup is armed before each re-check, so no change can slip between them)."""
        if done():  # the common case: nothing to arm
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            woken: asyncio.Future[None] = loop.create_future()
            with self._lock:
                armed = len(self._wakeups) < MAX_WAKEUPS
                if armed:
                    self._wakeups.append((loop, woken))
            if done():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:  # a full wakeup list falls back to a short sleep (bounded memory, never a stuck request)
                await asyncio.wait_for(woken, remaining) if armed else await asyncio.sleep(min(remaining, 0.005))
            except TimeoutError:
                return done()

    def _wake_all(self) -> None:
        with self._lock:
            wakeups, self._wakeups = self._wakeups, []
        for loop, woken in wakeups:
            loop.call_soon_threadsafe(_wake, woken)

    # --- correlation ---------------------------------------------------------------------
    def _resolve(self, result: m.CommandResult) -> None:
        with self._lock:
            waiters = self._waiters.pop((result.account_id, result.request_id), [])
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_set_result, fut, result)

    async def wait_result(self, account_id: int, request_id: str, timeout_s: float) -> m.CommandResult | None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[m.CommandResult] = loop.create_future()
        key = (account_id, request_id)
        with self._lock:
            known = self._results.get(key)
            if known is not None:
                return known
            self._waiters.setdefault(key, []).append((loop, fut))
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            with self._lock:
                waiters = self._waiters.get(key, [])
                if (loop, fut) in waiters:
                    waiters.remove((loop, fut))
            return None

    def result(self, account_id: int, request_id: str) -> m.CommandResult | None:
        with self._lock:
            return self._results.get((account_id, request_id))

    # --- queries -------------------------------------------------------------------------
    def snapshot_account(self, account_id: int) -> AccountView:
        with self._lock:
            view = self.accounts.get(account_id) or AccountView()
            return AccountView(dict(view.balances), dict(view.open_orders), OrderedDict(view.closed_orders),
                               dict(view.positions), deque(view.fills, maxlen=MAX_CLOSED_ORDERS_PER_ACCOUNT),
                               deque(view.funding, maxlen=MAX_FUNDING_PER_ACCOUNT))

    def open_positions(self, symbol: str) -> list[m.PositionChanged]:
        """Every account's open position in `symbol` (for the ADL ranking), copied under the lock."""
        with self._lock:
            found = (view.positions.get(symbol) for view in self.accounts.values())
            return [p for p in found if p is not None and p.size.lstrip("-").strip("0.") != ""]

    def find_order(self, account_id: int, order_id: int) -> m.OrderView | None:
        with self._lock:
            view = self.accounts.get(account_id)
            if view is None:
                return None
            return view.open_orders.get(order_id) or view.closed_orders.get(order_id)

    def depth(self, symbol: str, limit: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """(bids, asks) as (price string, qty lots), best first."""
        _, bids, asks = self.depth_at(symbol, limit)
        return bids, asks

    def depth_at(self, symbol: str, limit: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
        """(seq, bids, asks): the levels as of matcher seq `seq`, read together."""
        inst = load_catalog().get(symbol)
        assert inst is not None
        with self._lock:
            book = self.books.get(symbol)
            if book is None:
                return 0, [], []
            seq, levels = book.last_seq, list(book.levels.items())
        key = lambda item: inst.parse_price(item[0])
        bids = sorted(((p, q) for (s, p), q in levels if s == "BUY"), key=key, reverse=True)[:limit]
        asks = sorted(((p, q) for (s, p), q in levels if s == "SELL"), key=key)[:limit]
        return seq, bids, asks

    def depth_changes(self, symbol: str, after_seq: int) -> tuple[int, list[tuple[int, str, str, int]]] | None:
        """(current seq, level changes after `after_seq` as (seq, side, price, new total lots)), or None when
        `after_seq` is older than the changes kept: the client must take a new snapshot."""
        with self._lock:
            book = self.books.get(symbol)
            if book is None:
                return (0, []) if after_seq == 0 else None
            oldest = book.changes[0][0] if book.changes else book.last_seq + 1
            if after_seq > book.last_seq or (after_seq < oldest - 1 and len(book.changes) == book.changes.maxlen):
                return None
            return book.last_seq, [c for c in book.changes if c[0] > after_seq]

    def best_opposite_ticks(self, symbol: str, side: str) -> int:
        """The best ask for a BUY, the best bid for a SELL, in ticks; 0 when that side is empty."""
        bids, asks = self.depth(symbol, 1)
        level = asks if side == "BUY" else bids
        inst = load_catalog().get(symbol)
        return inst.parse_price(level[0][0]) if level and inst is not None else 0

    def candles(self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int,
                mark: bool = False) -> list[Candle]:
        """Trade (or mark-price) candles of `interval` (perpline.market.candles.INTERVALS_MS), oldest first."""
        with self._lock:
            found = self.mark_candles.get(symbol) if mark else getattr(self.books.get(symbol), "candles", None)
            if found is None:
                return []
            return [copy(c) for c in found.series[interval].window(start_ms, end_ms, limit)]

    def day_stats(self, symbol: str, now_ms: int) -> DayStats | None:
        """The rolling 24 hours of trades ending at `now_ms`, or None without a trade in them."""
        with self._lock:
            book = self.books.get(symbol)
            return None if book is None else book.day.stats(now_ms)

    def trades(self, symbol: str, limit: int) -> list[m.Trade]:
        with self._lock:
            book = self.books.get(symbol)
            if book is None:
                return []
            newest = list(islice(reversed(book.trades), limit))  # the last `limit`, without copying the rest
        return newest[::-1]


def _apply_order(view: AccountView, order: m.OrderView) -> bool:
    """An order's latest state; a redelivered older state (open for an order already closed here, or
    less filled than what is shown) is ignored, so a view never steps back. Timestamps do not order an
    order's changes: a cancel is stamped by the API when sent, a fill may be applied before it."""
    open_now = order.status in OPEN
    if open_now:
        if order.order_id in view.closed_orders:
            return False
        shown = view.open_orders.get(order.order_id)
        if shown is not None and Decimal(order.filled) < Decimal(shown.filled):
            return False
    if open_now:
        changed = view.open_orders.get(order.order_id) != order
        view.open_orders[order.order_id] = order
        return changed
    changed = view.closed_orders.get(order.order_id) != order
    view.open_orders.pop(order.order_id, None)
    view.closed_orders[order.order_id] = order
    while len(view.closed_orders) > MAX_CLOSED_ORDERS_PER_ACCOUNT:
        view.closed_orders.popitem(last=False)
    return changed


def _append_once(items: deque[Any], keys: set[Any], key_of: Callable[[Any], Any], item: Any) -> bool:
    """Append an event unless it is already held (False); the key set follows the bounded deque."""
    key = key_of(item)
    if key in keys:
        return False
    if items.maxlen is not None and len(items) == items.maxlen:
        keys.discard(key_of(items[0]))
    items.append(item)
    keys.add(key)
    return True


def _trade_timed(trade_ms: int, record_ts: tuple[int, int]) -> None:
    """The trade's delay to the matcher's record (its produce time) and to this read model (bench.streams)."""
    kind, produced_ms = record_ts
    if kind == TIMESTAMP_CREATE_TIME:
        streamdelay.trade_at("matcher", trade_ms, produced_ms)
    streamdelay.trade_at("applied", trade_ms, time.time() * 1000)


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


def _set_result(fut: asyncio.Future[m.CommandResult], result: m.CommandResult) -> None:
    if not fut.done():
        fut.set_result(result)
