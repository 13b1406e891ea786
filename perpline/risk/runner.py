"""The risk process: mark price every tick, funding at each funding time, liquidation on a cross.

    python -m perpline.risk.runner [--tick-ms 1000]

Read top to bottom, one loop:
1. catch up: read matcher.events, positions and funding.rounds from the start and the last index
   price, up to the end offsets seen at start (read by fetching: the embedded broker's ListOffsets
   answer is low after multi-record batches); act on nothing before that;
2. every tick, per symbol: index (stale after PERPLINE_INDEX_STALE_S: fall back to the book's mid,
   else the last trade), premium sample, mark = Binance's median, publish on prices.mark; between
   ticks, when the book, a trade or the index moved, the mark is recomputed (at most every
   MARK_MIN_GAP_MS), the liquidation check runs at once, and a move of 0.01 % or more is published;
3. liquidations: the positions the mark crossed (log N + k), one Liquidate command each to the
   accounts processor, retried every LIQUIDATION_RETRY_MS with the next attempt number while the
   position stays at the same version;
4. funding: at each multiple of PERPLINE_FUNDING_INTERVAL_S, the rate from the interval's premium
   samples and one FundingCharge per open position at this cut of the trade stream (sizes sum to
   zero), flushed, then the FundingRound record that marks the round done. A restart that finds
   the round recorded does not charge it again; one that crashed between the charges and the record
   sends the same charges again, which the accounts processor answers from its request memory.
Outputs are commands with deterministic request ids; nothing here holds money.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from prometheus_client import Counter, Gauge

from perpline import push
from perpline.config import (
    fetch_config,
    funding_interval_ms,
    kafka_config,
    producer_config,
    settings,
    topic_map,
)
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.contracts.units import RATE_SCALE, format_amount, format_rate
from perpline.obs import LagWatcher, StopFlag, clear_ready, mark_ready, serve_metrics, setup_logging
from perpline.risk import adl
from perpline.risk import formulas as f
from perpline.risk.memory import FinishedFirst
from perpline.risk.state import MAX_PREMIUM_SAMPLES, RiskState, SymbolState
from perpline.topics_tool import watermarks

log = logging.getLogger("perpline.risk")

INPUTS = ("matcher.events", "positions", "funding.rounds", "prices.index")
LIQUIDATION_RETRY_MS = 2000
LIQUIDATION_STUCK_MS = 30_000  # no LiquidationOrderDone for an attempt this long (it was refused): go on
ADL_AFTER_ATTEMPTS = 3  # liquidation orders that found no taker within 5 % of the mark: deleverage
ADL_RESEND_MS = 600_000  # on restart, resend the commands of ADL decisions this recent (answered once)
MAX_POLL_BATCH = 10_000
MAX_SENT_REMEMBERED = 100_000  # liquidation attempts remembered (past it, finished ones go: Risk.finished)
MARK_MIN_GAP_MS = 100  # between ticks, a moved book or index recomputes the mark at most this often
MARK_PUBLISH_MOVE_E8 = 10_000  # ... and publishes it when it moved 0.01 % or more since the last published
TICKS = Counter("perpline_risk_ticks_total", "mark price ticks")
LIQUIDATIONS = Counter("perpline_risk_liquidations_sent_total", "Liquidate commands sent", ["symbol"])
ROUNDS = Counter("perpline_risk_funding_rounds_total", "funding rounds settled", ["symbol"])
POSITIONS = Gauge("perpline_risk_positions", "positions tracked for liquidation", ["symbol"])
MARK = Gauge("perpline_risk_mark_price", "last mark price", ["symbol"])


def index_stale_ms() -> int:
    return int(float(os.environ.get("PERPLINE_INDEX_STALE_S", "10")) * 1000)


class Risk:
    def __init__(self, bootstrap: str, tick_ms: int, pusher: push.PushServer | None = None) -> None:
        """`pusher`: where each funding round is also pushed to API processes once acknowledged
        (perpline.push), so no API shows a round's payments before the round itself."""
        self.pusher = pusher
        self.topics = topic_map()
        self.logical = {physical: logical for logical, physical in self.topics.items()}
        self.state = RiskState()
        self.tick_ms = tick_ms
        self.interval_ms = funding_interval_ms()
        self.stale_ms = index_stale_ms()
        # (symbol, account, version) -> (attempt, sent ms, insurance-fund cover offered)
        self.sent: FinishedFirst[tuple[str, int, int], tuple[int, int, int]] = FinishedFirst(MAX_SENT_REMEMBERED)
        self.consumer = Consumer(kafka_config(bootstrap, **{"group.id": "perpline-risk", "enable.auto.commit": False,
                                                            "isolation.level": "read_committed", **fetch_config(on_write_path=False)}))
        self.producer = Producer(producer_config(bootstrap))
        self.stopping = StopFlag()
        self.lag = LagWatcher("perpline-risk")
        self.recent_adl: list[m.AdlTrade] = []  # ADL decisions read while catching up

    # --- 1. catch up ------------------------------------------------------------------------------

    def assign(self) -> dict[tuple[str, int], int]:
        """Assign every input partition from its start (the index from its last record); returns the
        end offsets to catch up to. The ends are `watermarks`' (the broker's answer corrected by a fetch):
        the embedded broker's ListOffsets answer is low after multi-record batches, and catching up to it
        would act on positions not read yet."""
        every = [TopicPartition(topic, p) for topic in (self.topics[logical] for logical in INPUTS)
                 for p in self.consumer.list_topics(topic, timeout=30).topics[topic].partitions]
        marks = watermarks(self.consumer, every)
        parts, ends = [], {}
        for tp in every:
            low, high = marks[(tp.topic, tp.partition)]
            start = max(low, high - 1) if self.logical[tp.topic] == "prices.index" else low
            parts.append(TopicPartition(tp.topic, tp.partition, start))
            if high > start:
                ends[(tp.topic, tp.partition)] = high
        self.consumer.assign(parts)
        self.lag.watch(self.consumer, parts)
        return ends

    def catch_up(self, ends: dict[tuple[str, int], int]) -> None:
        while ends and not self.stopping:
            for msg in self.consumer.consume(MAX_POLL_BATCH, 0.5):
                self.on_message(msg)
            for (topic, p), end in list(ends.items()):
                position = self.consumer.position([TopicPartition(topic, p)])[0].offset
                if position >= end:
                    del ends[(topic, p)]

    def on_message(self, msg: Any) -> None:
        if msg.error() is not None:
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", extra={"error": str(msg.error())})
            return
        logical = self.logical.get(msg.topic(), "")
        try:
            value = codec.decode(logical, msg.value())
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            log.error("undecodable input skipped", extra={"topic": logical, "offset": msg.offset(), "error": str(exc)})
            return
        if logical == "matcher.events":
            self.state.on_matcher_event(value)
        elif logical == "positions":
            self.state.on_position(value)
        elif logical == "funding.rounds":
            self.state.on_round(value)
            if isinstance(value, m.AdlTrade):
                self.recent_adl.append(value)
        elif logical == "prices.index":
            self.state.on_index(value)

    # --- the loop ----------------------------------------------------------------------------------

    def run(self) -> None:
        self.catch_up(self.assign())
        now_ms = int(time.time() * 1000)
        for record in self.recent_adl:  # a crash may have come between a decision and its commands
            if now_ms - record.ts_ms < ADL_RESEND_MS:
                self.send_adl(record)
        self.recent_adl.clear()
        for s in self.state.symbols.values():
            s.dirty = False  # history moved nothing yet: the first tick publishes
        mark_ready()
        log.info("risk ready", extra={"symbols": list(self.state.symbols), "funding_interval_ms": self.interval_ms})
        next_tick = time.monotonic()
        while not self.stopping:
            for msg in self.consumer.consume(MAX_POLL_BATCH, max(0.0, min(0.05, next_tick - time.monotonic()))):
                self.on_message(msg)
            self.on_change(int(time.time() * 1000))
            if time.monotonic() >= next_tick:
                self.tick(int(time.time() * 1000))
                next_tick += self.tick_ms / 1000
        self.producer.flush(10)
        self.lag.unwatch()
        self.consumer.close()

    def tick(self, now_ms: int) -> None:
        """The steady cadence: sample the premium, publish every symbol's mark, liquidate, fund."""
        TICKS.inc()
        for s in self.state.symbols.values():
            s.dirty = False
            if not self.mark(s, now_ms, sample=True):
                continue
            self.liquidate(s, now_ms)
            due = now_ms // self.interval_ms * self.interval_ms
            if due > s.last_round_ms and s.last_round_ms and now_ms >= due:
                self.fund(s, due)
            elif not s.last_round_ms:
                s.last_round_ms = due  # the first round of a new exchange is the next boundary
            POSITIONS.labels(s.inst.symbol).set(len(s.liquidations))
        self.producer.poll(0)

    def on_change(self, now_ms: int) -> None:
        """Between ticks: a symbol whose book, trades or index moved gets its mark recomputed (at most every
        MARK_MIN_GAP_MS) and checked against the liquidation prices at once; it is published when it moved
        MARK_PUBLISH_MOVE_E8 or more since the last published mark."""
        for s in self.state.symbols.values():
            if not s.dirty or now_ms - s.computed_ms < MARK_MIN_GAP_MS:
                continue
            s.dirty = False
            before = s.mark_ticks
            if self.mark(s, now_ms, sample=False) and s.mark_ticks != before:
                self.liquidate(s, now_ms)
        self.producer.poll(0)

    # --- 2. mark ----------------------------------------------------------------------------------

    def mark(self, s: SymbolState, now_ms: int, sample: bool) -> bool:
        """Compute the mark (Binance's median); publish it on a tick (`sample`: also take the premium and
        basis samples) or when it moved enough. False: no price to mark from yet."""
        bid, ask, inst = s.best_bid(), s.best_ask(), s.inst
        stale = not s.index_ticks or now_ms - s.index_ms > self.stale_ms
        index = s.index_ticks
        if stale:  # documented fallback: the book's mid, else the last trade
            index = (bid + ask) // 2 if bid and ask else s.last_trade_ticks
        if index <= 0:
            return False
        if sample and bid and ask:
            s.basis.append((bid + ask) // 2 - index)
            if len(s.premiums) < MAX_PREMIUM_SAMPLES:
                s.premiums.append(f.premium_e8(index, bid, ask))
        basis = sum(s.basis) // len(s.basis) if s.basis else 0
        s.rate_e8 = f.funding_rate_e8(inst, s.premiums)
        next_ms = (now_ms // self.interval_ms + 1) * self.interval_ms
        mark = f.mark_ticks(index, bid, ask, s.last_trade_ticks, s.rate_e8, next_ms - now_ms, self.interval_ms, basis)
        s.mark_ticks, s.computed_ms = mark, now_ms
        moved = abs(mark - s.published_ticks) * RATE_SCALE >= MARK_PUBLISH_MOVE_E8 * max(1, s.published_ticks)
        if not (sample or moved):
            return True
        s.published_ticks = mark
        MARK.labels(inst.symbol).set(mark)
        self._produce("prices.mark", inst.symbol, m.MarkPrice(
            trace_id="", causation_id=f"tick:{now_ms}" if sample else f"change:{now_ms}", ts_ms=now_ms,
            symbol=inst.symbol, mark_price=inst.format_price(mark), index_price=inst.format_price(index),
            last_price=inst.format_price(s.last_trade_ticks) if s.last_trade_ticks else "",
            mid_price=inst.format_price((bid + ask) // 2) if bid and ask else "", funding_rate=format_rate(s.rate_e8),
            next_funding_ms=next_ms, index_stale=stale))
        return True

    # --- 3. liquidation ---------------------------------------------------------------------------

    def liquidate(self, s: SymbolState, now_ms: int) -> None:
        """One Liquidate per crossed position, retried every LIQUIDATION_RETRY_MS. Attempt 0 closes at the
        bankruptcy price; later ones may go beyond it by what the insurance fund can pay (its balance less
        what other attempts in flight may take). ADL when the fund has nothing to give, or after
        ADL_AFTER_ATTEMPTS attempts found no taker."""
        for account, version in s.liquidations.crossed(s.mark_ticks):
            key = (s.inst.symbol, account, version)
            attempt, sent_ms, _ = self.sent.get(key, (0, 0, 0))
            if sent_ms and not self.may_retry(s, key, attempt, now_ms - sent_ms):
                continue
            attempt = attempt + 1 if sent_ms else 0
            cover = self.fund_cover(s.inst.margin_asset, key, now_ms) if attempt else 0
            if attempt > ADL_AFTER_ATTEMPTS:
                self.sent[key] = (attempt, now_ms, 0)  # deleveraged (or nobody to deleverage against): wait
                continue
            if (attempt == ADL_AFTER_ATTEMPTS or (attempt and cover == 0)) and self.deleverage(s, account, now_ms):
                self.sent[key] = (ADL_AFTER_ATTEMPTS + 1, now_ms, 0)
                continue
            if attempt == ADL_AFTER_ATTEMPTS:
                self.sent[key] = (attempt + 1, now_ms, 0)
                continue
            self.sent[key] = (attempt, now_ms, cover)
            LIQUIDATIONS.labels(s.inst.symbol).inc()
            log.warning("liquidating", extra={"symbol": s.inst.symbol, "account": account, "version": version,
                                              "attempt": attempt, "mark": s.inst.format_price(s.mark_ticks),
                                              "fund_cover": format_amount(cover)})
            self._produce("account.commands", str(account), m.Liquidate(
                trace_id="", causation_id=f"mark:{s.inst.symbol}:{now_ms}", ts_ms=now_ms,
                request_id=f"liq:{s.inst.symbol}:{account}:{version}:{attempt}", account_id=account,
                symbol=s.inst.symbol, position_version=version, mark_price=s.inst.format_price(s.mark_ticks),
                attempt=attempt, max_loss=format_amount(cover) if attempt else ""))
        self.sent.forget_finished(lambda key, value: self.finished(key, value, now_ms))

    def finished(self, key: tuple[str, int, int], value: tuple[int, int, int], now_ms: int) -> bool:
        """An attempt may be forgotten once its position moved on (no later attempt will count from it) and
        its cover is no longer reserved (fund_cover counts covers within LIQUIDATION_RETRY_MS)."""
        _, sent_ms, _ = value
        return self.state.moved_on(*key) and now_ms - sent_ms >= LIQUIDATION_RETRY_MS

    def may_retry(self, s: SymbolState, key: tuple[str, int, int], attempt: int, waited_ms: int) -> bool:
        """The next attempt (or ADL) only once the last attempt's order closed (LiquidationOrderDone on
        `positions`) and every trade the matcher made for the account is in its position snapshot: a fill
        still on its way must not be deleveraged again. LIQUIDATION_STUCK_MS unblocks a refused attempt."""
        if waited_ms < LIQUIDATION_RETRY_MS:
            return False
        symbol, account, version = key
        if attempt <= ADL_AFTER_ATTEMPTS and (symbol, account, version, attempt) not in self.state.liquidation_done:
            return waited_ms >= LIQUIDATION_STUCK_MS
        snapshot = s.positions.get(account)
        return snapshot is not None and s.sizes.get(account, 0) == snapshot[0]

    def fund_cover(self, asset: str, key: tuple[str, int, int], now_ms: int) -> int:
        """What the insurance fund may lose on this attempt: its balance less the covers offered to other
        attempts still within their retry window (their fills may not have settled yet)."""
        reserved = sum(cover for other, (_, ms, cover) in self.sent.items()
                       if other != key and now_ms - ms < LIQUIDATION_RETRY_MS)
        return max(0, self.state.fund.get(asset, 0) - reserved)

    def deleverage(self, s: SymbolState, account: int, now_ms: int) -> bool:
        """The market did not take the position and the fund cannot: ADL (perpline.risk.adl). The decision
        is recorded on funding.rounds before its commands, so a restart counts it in the sizes and can
        resend them. False: the opposite side cannot take the whole position."""
        record = adl.plan(s, account, now_ms)
        if record is None:
            log.error("ADL found no counterparty for the whole position", extra={"account": account})
            return False
        self._produce("funding.rounds", s.inst.symbol, record)
        if self.producer.flush(30) > 0:
            raise RuntimeError("ADL record not acknowledged; stopping before acting on it")
        self.state.apply_adl(s, record)
        self.send_adl(record)
        log.warning("auto-deleveraging", extra={"symbol": s.inst.symbol, "account": account, "fills": record.fills,
                                                "price": record.price})
        return True

    def send_adl(self, record: m.AdlTrade) -> None:
        other = "BUY" if record.side == "SELL" else "SELL"
        total = sum(self.state.symbols[record.symbol].inst.parse_qty(q) for _, q in record.fills)
        legs = [(record.bankrupt_account, record.side, self.state.symbols[record.symbol].inst.format_qty(total), True)]
        legs += [(acct, other, qty, False) for acct, qty in record.fills]
        for acct, side, qty, bankrupt in legs:
            self._produce("account.commands", str(acct), m.Deleverage(
                trace_id="", causation_id=f"adl:{record.adl_id}", ts_ms=record.ts_ms,
                request_id=f"adl:{record.adl_id}:{acct}", account_id=acct, adl_id=record.adl_id, symbol=record.symbol,
                side=side, quantity=qty, price=record.price, bankrupt=bankrupt))  # type: ignore[arg-type]
        self.producer.flush(30)

    # --- 4. funding -------------------------------------------------------------------------------

    def fund(self, s: SymbolState, funding_ms: int) -> None:
        inst, rate, mark = s.inst, s.rate_e8, s.mark_ticks
        assert sum(s.sizes.values()) == 0, "positions from the trade stream must net to zero"
        paid = received = 0
        for account, size in sorted(s.sizes.items()):
            amount = f.funding_payment(inst, size, mark, rate)
            paid, received = paid + max(amount, 0), received + max(-amount, 0)
            self._produce("account.commands", str(account), m.FundingCharge(
                trace_id="", causation_id=f"funding:{inst.symbol}:{funding_ms}", ts_ms=funding_ms,
                request_id=f"funding:{inst.symbol}:{funding_ms}:{account}", account_id=account, symbol=inst.symbol,
                funding_time_ms=funding_ms, rate=format_rate(rate), mark_price=inst.format_price(mark),
                size=("-" if size < 0 else "") + inst.format_qty(abs(size)), amount=format_amount(amount)))
        if self.producer.flush(30) > 0:
            raise RuntimeError("funding charges not acknowledged; stopping before recording the round")
        round_ = m.FundingRound(
            trace_id="", causation_id=f"funding:{inst.symbol}:{funding_ms}", ts_ms=funding_ms, symbol=inst.symbol,
            funding_time_ms=funding_ms, rate=format_rate(rate), mark_price=inst.format_price(mark),
            positions=len(s.sizes), paid=format_amount(paid), received=format_amount(received))
        self._produce("funding.rounds", inst.symbol, round_)
        if self.producer.flush(30) > 0:
            raise RuntimeError("funding round record not acknowledged")
        if self.pusher is not None:  # acknowledged: final; it reaches the API before the payments can
            self.pusher.publish(push.Frame("funding.rounds", push.NO_OFFSET, push.NO_OFFSET, [], [codec.encode(round_)]))
        s.last_round_ms = funding_ms
        s.premiums.clear()
        ROUNDS.labels(inst.symbol).inc()
        log.info("funding round", extra={"symbol": inst.symbol, "funding_time_ms": funding_ms,
                                         "rate": format_rate(rate), "positions": len(s.sizes)})

    def _produce(self, logical: str, key: str, msg: msgspec.Struct) -> None:
        self.producer.produce(self.topics[logical], key=key.encode(), value=codec.encode(msg))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="perpline risk")
    parser.add_argument("--tick-ms", type=int, default=int(os.environ.get("PERPLINE_MARK_TICK_MS", "1000")))
    args = parser.parse_args(argv)
    setup_logging("risk")
    serve_metrics(None)
    clear_ready()
    Risk(settings().kafka_bootstrap, args.tick_ms, push.server_from_env()).run()


if __name__ == "__main__":
    main()
