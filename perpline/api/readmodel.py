"""The API's read model, fed by topics: account state from account.events, books and trades from
matcher.events, marks and funding rounds from the risk process, keys from auth.keys.

A thin facade over its parts, one per job (perpline.api.reads): account views and their feed, book
mirrors, the matcher's word per order, command results, prices, wakeups. Each part has its own state
and lock. One consumer thread applies messages in topic order; request handlers read the parts.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
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

from perpline import push
from perpline.accounts.order_status import OPEN
from perpline.api import checkpoint, pushed, snapshot, streamdelay
from perpline.api.reads.accounts import AccountViews
from perpline.api.reads.books import BookMirrors
from perpline.api.reads.prices import MAX_FUNDING_ROUNDS, Prices
from perpline.api.reads.results import Results
from perpline.api.reads.tracking import MatcherTracking
from perpline.api.reads.wakeups import Wakeups
from perpline.api.views import AccountView, MatcherOrder
from perpline.auth.registry import KeyRegistry
from perpline.config import fetch_config, kafka_config, push_feeds, settings
from perpline.consume import poll_batch
from perpline.contracts import messages as m
from perpline.contracts.instruments import load_catalog
from perpline.market.candles import Candle, DayStats
from perpline.obs import LagWatcher

__all__ = ["AccountView", "ReadModel"]

log = logging.getLogger("perpline.api.readmodel")

POLL_BATCH = 500
CHECKPOINT_LOADED = Gauge("perpline_api_checkpoint_loaded_events",
                          "source records behind the checkpoint the read model started from (0: replayed all)")
RESTORE_SECONDS = Gauge("perpline_api_checkpoint_restore_seconds", "from the read model's start to its checkpoint restored")
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
        self._topics = topics  # logical name -> physical name
        self.accounts = AccountViews()
        self.books = BookMirrors()
        self.tracking = MatcherTracking()
        self.results = Results()
        self.prices = Prices()
        self.wakeups = Wakeups()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readmodel", daemon=True)
        self.caught_up = threading.Event()
        self._lag = LagWatcher("perpline-api-readmodel")
        self.applied = 0  # account and matcher events applied (the stream hub ticks when it moves)
        self._from_checkpoint = from_checkpoint
        self._checkpoint_every = checkpoint_events
        self._checkpoint_at = 0  # source records behind the newest checkpoint known here
        self._writing = threading.Event()  # a checkpoint is being published (one at a time)
        # next offset of every partition of the source topics: the point the views are at
        self._positions: dict[str, dict[int, int]] = {}
        self._started = time.monotonic()
        # the consumer thread and the pushed records (perpline.api.pushed) apply under this lock
        self.apply_lock = threading.Lock()
        self.verified = pushed.Verified()
        feeds = push_feeds()
        self._push = push.PushClient(feeds, self._on_frame) if feeds else None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        if self._push is not None:
            self._push.start()

    def stop(self) -> None:
        self._stop.set()
        if self._push is not None:
            self._push.stop()
        self._thread.join(timeout=10)

    def _consumer(self) -> Consumer:
        consumer = Consumer(kafka_config(self._bootstrap, **{
            "group.id": "perpline-api-readmodel", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_committed", "enable.partition.eof": True,
            # on the write-path wait even with push feeds: marks, funding rounds and keys are not pushed, and a
            # funding payment (pushed) must not be shown long before its round (a 200 ms wait did that)
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
            self.restore(rebuilt(checkpoint.load(self._bootstrap, topic, manifest)))
        except (RuntimeError, ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("checkpoint not loaded; replaying from the start",
                        extra={"checkpoint": manifest.checkpoint_id, "error": str(exc)})
            return {}
        self._checkpoint_at = manifest.events()
        CHECKPOINT_LOADED.set(manifest.events())
        RESTORE_SECONDS.set(time.monotonic() - self._started)
        log.info("read model restored from a checkpoint", extra={
            "checkpoint": manifest.checkpoint_id, "events": manifest.events(), "bytes": manifest.state_bytes,
            "ms": round((time.monotonic() - self._started) * 1000)})
        return manifest.positions

    def restore(self, restored: snapshot.Restored) -> None:
        """Start from a checkpoint's collections (before the consumer thread applies anything)."""
        self.applied = restored.applied
        self.accounts.restore(restored.accounts)
        self.books.restore(restored.books)
        self.prices.restore(restored.marks, restored.mark_candles, restored.rounds)
        self.tracking.restore(restored.matcher_orders)
        self.results.restore(restored.results)

    def _run(self) -> None:
        consumer = self._consumer()
        names = {v: k for k, v in self._topics.items()}
        try:
            while not self._stop.is_set():
                batch = poll_batch(consumer, POLL_BATCH, 0.2)
                with self.apply_lock:
                    for msg in batch:
                        self._on_message(msg, names)
                if batch:
                    self.wakeups.wake_all()
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
            parts = self._positions.setdefault(msg.topic(), {})
            if msg.offset() < parts.get(msg.partition(), 0) and self.verified.already_applied(
                    msg.topic(), msg.partition(), msg.offset(), msg.value()):
                return  # pushed and applied before the topic brought it
            parts[msg.partition()] = max(parts.get(msg.partition(), 0), msg.offset() + 1)
        value = pushed.decode_or_none(logical, msg.value(), offset=msg.offset(), partition=msg.partition())
        if value is None:
            return
        if logical == "auth.keys":
            if self.registry is not None:
                self.registry.apply(value, msg.offset())
            return
        applied = self.apply(logical, value)
        if isinstance(value, m.Trade):
            _trade_timed(value.ts_ms, msg.timestamp(), applied)

    def apply(self, logical: str, value: Any) -> bool:
        """Apply one decoded message of topic `logical` to the part whose job it is (the consumer thread);
        False for a matcher event the book mirrors already had (re-emitted, or pushed before)."""
        if logical in ("prices.mark", "funding.rounds"):
            self.prices.apply(value)
            return True
        self.applied += 1
        if logical == "account.events":
            if isinstance(value, m.CommandResult):
                self.results.record(value)
            else:
                self.accounts.apply(value)
            return True
        inst = self.books.apply(value)
        if inst is not None:
            self.tracking.apply(inst, value)
        return inst is not None

    def apply_next_matcher_event(self, ev: Any) -> bool:
        """Apply a pushed matcher event if it is its symbol's next seq (perpline.api.pushed)."""
        inst = self.books.apply(ev, only_next=True)
        if inst is None:
            return False
        self.tracking.apply(inst, ev)
        self.applied += 1
        if isinstance(ev, m.Trade):
            streamdelay.trade_at("applied", ev.ts_ms, time.time() * 1000)
        return True

    def _on_frame(self, frame: push.Frame) -> None:
        """A pushed frame (a push-feed thread): applied under the apply lock, then the waiters woken."""
        with self.apply_lock:
            applied = pushed.apply_frame(self, frame)
        if applied:
            self.wakeups.wake_all()

    def physical(self, logical: str) -> str:
        return self._topics[logical]

    def positions(self) -> dict[str, dict[int, int]]:
        """Next offset per partition of the source topics (read and moved under the apply lock)."""
        return self._positions

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
        with self.apply_lock:  # pushed frames apply from other threads
            positions = {topic: dict(parts) for topic, parts in self._positions.items()}
            blob = snapshot.encode(snapshot.capture(self))
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

    # --- waiting -------------------------------------------------------------------------
    async def wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        return await self.wakeups.wait_until(done, timeout_s)

    async def wait_result(self, account_id: int, request_id: str, timeout_s: float) -> m.CommandResult | None:
        return await self.results.wait(account_id, request_id, timeout_s)

    def result(self, account_id: int, request_id: str) -> m.CommandResult | None:
        return self.results.get(account_id, request_id)

    def settled(self, account_id: int, order_id: int) -> bool:
        """True once the matcher has finished acting on the order's arrival (it rests or is done) and
        the account views -- the order's own and every maker's it traded against -- show exactly the
        fills and final status the matcher decided. Then a reply reflects the whole write."""
        state = self.tracking.state(order_id)
        if state is None or not (state.rested or state.done):
            return False
        return self._reflects(account_id, order_id, state) and all(
            self._reflects(acct, maker_id, self.tracking.state(maker_id)) for acct, maker_id in state.makers)

    def _reflects(self, account_id: int, order_id: int, state: MatcherOrder | None) -> bool:
        """The account view shows the matcher's fills and finished-ness of this order."""
        if state is None:
            return True  # forgotten (bounded tracking): nothing left to compare
        order = self.accounts.find_order(account_id, order_id)
        if order is None:
            return False
        inst = load_catalog().get(order.symbol)
        assert inst is not None
        finished = order.status not in OPEN
        if state.terms is not None and not finished and (order.price, order.quantity) != state.terms:
            return False  # the account has not applied the matcher's amend yet
        return inst.parse_qty(order.filled, allow_zero=True) == state.filled_lots and finished == state.done

    async def wait_settled(self, account_id: int, order_id: int, timeout_s: float) -> bool:
        return await self.wait_until(lambda: self.settled(account_id, order_id), timeout_s)

    def amends(self, order_id: int) -> tuple[int, int]:
        """(amends answered by the matcher, code of the last refused one) for an order."""
        return self.tracking.amends(order_id)

    async def wait_amended(self, account_id: int, order_id: int, answered_before: int, timeout_s: float) -> int:
        """Wait until the matcher answered one more amend of the order and the views show it; returns
        the refusal code (0: applied), or -1 if either has not happened within `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if not await self.wait_until(lambda: self.amends(order_id)[0] > answered_before, timeout_s):
            return -1
        if not await self.wait_settled(account_id, order_id, max(0.0, deadline - loop.time())):
            return -1  # answered by the matcher, not yet in the views: not known to the caller either
        return self.amends(order_id)[1]

    def matcher_code(self, order_id: int) -> int:
        return self.tracking.code(order_id)

    # --- accounts ------------------------------------------------------------------------
    def account_feed(self, after: int) -> tuple[int, list[Any] | None]:
        return self.accounts.feed.after(after)

    def snapshot_account(self, account_id: int) -> AccountView:
        """A copy of the whole view (tests and tools; requests read only the parts they need)."""
        return self.accounts.copy(account_id)

    def find_order(self, account_id: int, order_id: int) -> m.OrderView | None:
        return self.accounts.find_order(account_id, order_id)

    def find_client_order(self, account_id: int, client_order_id: str) -> m.OrderView | None:
        return self.accounts.find_client_order(account_id, client_order_id)

    def open_positions(self, symbol: str) -> list[m.PositionChanged]:
        """Every account's open position in `symbol` (the ADL ranking)."""
        return self.accounts.open_positions(symbol)

    # --- market --------------------------------------------------------------------------
    def book_seq(self, symbol: str) -> int:
        return self.books.seq(symbol)

    def depth(self, symbol: str, limit: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """(bids, asks) as (price string, qty lots), best first."""
        _, bids, asks = self.books.depth_at(symbol, limit)
        return bids, asks

    def depth_at(self, symbol: str, limit: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
        """(seq, bids, asks): the levels as of matcher seq `seq`, read together."""
        return self.books.depth_at(symbol, limit)

    def depth_changes(self, symbol: str, after_seq: int) -> tuple[int, list[tuple[int, str, str, int]]] | None:
        return self.books.depth_changes(symbol, after_seq)

    def best_opposite_ticks(self, symbol: str, side: str) -> int:
        """The best ask for a BUY, the best bid for a SELL, in ticks; 0 when that side is empty."""
        bids, asks = self.depth(symbol, 1)
        level = asks if side == "BUY" else bids
        inst = load_catalog().get(symbol)
        return inst.parse_price(level[0][0]) if level and inst is not None else 0

    def trades(self, symbol: str, limit: int) -> list[m.Trade]:
        return self.books.trades(symbol, limit)

    def candles(self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int,
                mark: bool = False) -> list[Candle]:
        """Trade (or mark-price) candles of `interval` (perpline.market.candles.INTERVALS_MS), oldest first."""
        if mark:
            return self.prices.candles(symbol, interval, start_ms, end_ms, limit)
        return self.books.candles(symbol, interval, start_ms, end_ms, limit)

    def day_stats(self, symbol: str, now_ms: int) -> DayStats | None:
        """The rolling 24 hours of trades ending at `now_ms`, or None without a trade in them."""
        return self.books.day_stats(symbol, now_ms)

    def mark(self, symbol: str) -> m.MarkPrice | None:
        return self.prices.mark(symbol)

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
        return self.prices.funding_rounds(symbol)


def start_read_model(bootstrap: str, topics: dict[str, str], secret_key: str) -> tuple[KeyRegistry, ReadModel]:
    """The key registry and the read model of an API process, its consumer thread started: from the newest
    read-model checkpoint (perpline.api.checkpoint) unless PERPLINE_API_START=replay."""
    cfg = settings()
    registry = KeyRegistry(secret_key)
    readmodel = ReadModel(bootstrap, topics, registry, checkpoint_events=cfg.api_checkpoint_events,
                          from_checkpoint=cfg.api_start == "checkpoint")
    readmodel.start()
    return registry, readmodel


def rebuilt(blob: bytes) -> snapshot.Restored:
    """A checkpoint's collections, decoded with the cyclic garbage collector paused: the millions of
    objects it creates hold no cycles to find, and the collections their allocations trigger took
    two thirds of the decoding time (measured: 0.56 s -> 0.17 s for a 30 MB state). The restored
    state is then frozen (gc.freeze): it lives as long as the process, and later collections no
    longer walk it."""
    paused = gc.isenabled()
    gc.disable()
    try:
        restored = snapshot.restore(snapshot.decode(blob), MAX_FUNDING_ROUNDS)
    finally:
        if paused:
            gc.enable()
    gc.freeze()
    return restored


def _trade_timed(trade_ms: int, record_ts: tuple[int, int], applied: bool) -> None:
    """The trade's delay to the matcher's record (its produce time) and, when the topic's copy is the one
    applied (not pushed before), to this read model (bench.streams)."""
    kind, produced_ms = record_ts
    if kind == TIMESTAMP_CREATE_TIME:
        streamdelay.trade_at("matcher", trade_ms, produced_ms)
    if applied:
        streamdelay.trade_at("applied", trade_ms, time.time() * 1000)
