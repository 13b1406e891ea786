"""Thousands of orders through the real broker and ClickHouse while the matcher, the accounts processor
and the ledger sink are SIGKILLed every few seconds; then the whole run is proved exact.

The flow: 8 accounts on two symbols, commands written straight to `account.commands` as the API writes
them (all order types, reduce-only, amends, cancels by client id, cancel-all, leverage, deposits,
withdrawals, bad numbers, unknown symbols, undecodable bytes), plus resent commands (same request id)
and re-delivered `matcher.events` and settlement legs. About a dozen kills land in the middle of it.

What "nothing lost, nothing doubled" means here, checked after quiescence:
1. matcher: `orders` replayed through a fresh engine gives exactly the de-duplicated `matcher.events`
   (same events, same bytes, seq without a gap);
2. clearing (in the matcher): those events give exactly the settlement legs found on `account.commands`;
3. accounts: what the processor published (account.events, ledger.entries), de-duplicated, agrees
   with the trade stream (every account's position equals the sum of its trades), the API serves
   exactly it (balances, positions, open orders), ClickHouse holds exactly its journals (same ids, same
   postings: the sink stored each once), and nothing but the injected garbage went to dead.letters
   (no fill for an unknown order, no illegal transition);
4. ledger: every journal sums to zero, the trial balance per asset is zero, fees charged == fee
   revenue, long open interest == short, wallets == the ledger, and no frozen margin without an order.
(A replay of `account.commands` is not used as the oracle: the embedded broker can expose a killed
transaction's records after the fact, so that log is not exactly what the processor consumed.)
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from stackutil import Stack, kill_component, running_stack

from perpline import topics_tool
from perpline.ch.client import get_client
from perpline.config import producer_config, topic_map
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.contracts.units import UnitError, format_amount, parse_amount
from perpline.matcher import convert
from perpline.matcher.legs import legs_for
from perpline.matcher.loader import load_core

pytestmark = pytest.mark.e2e
COMMANDS = int(os.environ.get("PERPLINE_CRASH_SESSION_COMMANDS", "3000"))
KILL_EVERY_S = float(os.environ.get("PERPLINE_CRASH_SESSION_KILL_EVERY_S", "4.0"))
RATE_PER_S = 60
VICTIMS = ("perpline.matcher.runner", "perpline.pipelines.accounts", "perpline.pipelines.ledger_sink")
ACCOUNTS = [7_100_001 + n for n in range(8)]
SMALL = set(ACCOUNTS[-2:])  # little money: their larger orders are refused for margin
SYMBOLS = {"BTCUSDT-PERP": (Decimal("50000.0"), Decimal("0.1"), Decimal("0.001"), (3, 30)),
           "ETHUSDT-PERP": (Decimal("3000.00"), Decimal("0.01"), Decimal("0.001"), (50, 500))}
QUIET_S = 8.0
VERIFY_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for s in running_stack(tmp_path_factory):
        yield s
        print("\n".join(line for line in s.lines if "liquidat" in line.lower() or "deleverag" in line.lower())[:5000])


# --- the flow ------------------------------------------------------------------------------------


class Flow:
    """A seeded stream of account commands, written as the API writes them."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0
        self.mid = {s: v[0] for s, v in SYMBOLS.items()}
        self.client_ids: dict[int, list[tuple[str, str]]] = defaultdict(list)  # account -> (symbol, client id)
        self.sent: list[m.Msg] = []

    def meta(self) -> dict[str, Any]:
        self.n += 1
        return {"trace_id": f"crash-{self.n}", "causation_id": f"crash-{self.n}", "ts_ms": 1_780_000_000_000 + self.n}

    def initial(self) -> list[m.Msg]:
        return [m.Deposit(**self.meta(), request_id=f"init-{a}", account_id=a, asset="USDT",
                          amount="2000" if a in SMALL else "50000") for a in ACCOUNTS]

    def next(self) -> m.Msg | bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.03 and self.sent:  # a resend: the same request id, must change nothing
            return rng.choice(self.sent[-300:])
        if roll < 0.035:
            return b'{"type":"place_order","not":"valid"'
        acct = rng.choice(ACCOUNTS)
        symbol = rng.choice(list(SYMBOLS))
        base, tick, lot, (lo, hi) = SYMBOLS[symbol]
        self.mid[symbol] += tick * rng.choice((-2, -1, 0, 1, 2))
        mid = self.mid[symbol]
        meta = self.meta()
        rid = f"q{self.n}"
        msg: m.Msg
        if roll < 0.06:
            msg = m.Deposit(**meta, request_id=rid, account_id=acct, asset="USDT", amount=str(rng.randint(100, 2000)))
        elif roll < 0.09:
            msg = m.Withdraw(**meta, request_id=rid, account_id=acct, asset="USDT", amount=str(rng.randint(1, 3000)))
        elif roll < 0.10:
            msg = m.SetLeverage(**meta, request_id=rid, account_id=acct, symbol=symbol, leverage=rng.choice((2, 5, 10, 20, 50)))
        elif roll < 0.20 and self.client_ids[acct]:
            sym, cid = rng.choice(self.client_ids[acct])
            msg = m.CancelOrder(**meta, request_id=rid, account_id=acct, symbol=sym, client_order_id=cid)
        elif roll < 0.21:
            msg = m.CancelAll(**meta, request_id=rid, account_id=acct, symbol=symbol)
        elif roll < 0.27 and self.client_ids[acct]:
            sym, cid = rng.choice(self.client_ids[acct])
            s_mid, s_tick, s_lot, (s_lo, s_hi) = self.mid[sym], SYMBOLS[sym][1], SYMBOLS[sym][2], SYMBOLS[sym][3]
            msg = m.AmendOrder(**meta, request_id=rid, account_id=acct, symbol=sym, client_order_id=cid,
                               price=str(s_mid + s_tick * rng.randint(-6, 6)), quantity=str(s_lot * rng.randint(s_lo, s_hi)))
        elif roll < 0.28:  # bad numbers and an unknown symbol: refused with a code, nothing changes
            bad = rng.choice((("price", "NaN"), ("price", "-5"), ("quantity", "0"), ("quantity", "1e9"),
                              ("price", str(mid + tick / 2)), ("symbol", "DOGEUSDT-PERP")))
            fields: dict[str, Any] = {"symbol": symbol, "price": str(mid), "quantity": str(lot * lo)}
            fields[bad[0]] = bad[1]
            msg = m.PlaceOrder(**meta, request_id=rid, account_id=acct, side="BUY", order_type="LIMIT",
                               client_order_id=f"bad{self.n}", **fields)
        else:
            msg = self._order(meta, rid, acct, symbol, mid, tick, lot, lo, hi)
        self.sent.append(msg)
        return msg

    def _order(self, meta: dict[str, Any], rid: str, acct: int, symbol: str, mid: Decimal, tick: Decimal, lot: Decimal,
               lo: int, hi: int) -> m.PlaceOrder:
        rng = self.rng
        side = rng.choice(("BUY", "SELL"))
        sign = 1 if side == "BUY" else -1
        kind, tif = rng.choice((("LIMIT", "GTC"),) * 6 + (("LIMIT", "IOC"), ("LIMIT", "FOK"), ("LIMIT", "GTX"),
                                                          ("MARKET", "GTC"), ("MARKET", "FOK")))
        qty = lot * rng.randint(lo, hi * (4 if acct in SMALL else 1))
        cid = f"c{self.n}"
        self.client_ids[acct].append((symbol, cid))
        extra: dict[str, Any] = {}
        if kind == "LIMIT":
            extra["price"] = str(mid + sign * tick * rng.randint(-8, 8))
            if rng.random() < 0.05:  # an occasional band check, sometimes out of band
                extra["band_reference"] = str(mid)
                extra["price"] = str((mid * (Decimal("1.07") if rng.random() < 0.5 else 1)).quantize(tick))
        else:
            extra["price_bound"] = str((mid * (Decimal("1.05") if side == "BUY" else Decimal("0.95"))).quantize(tick))
        return m.PlaceOrder(**meta, request_id=rid, account_id=acct, symbol=symbol, side=side, order_type=kind,  # type: ignore[arg-type]
                            time_in_force=tif, quantity=str(qty), client_order_id=cid,  # type: ignore[arg-type]
                            reduce_only=rng.random() < 0.15, **extra)


# --- reading the logs ----------------------------------------------------------------------------


def read_log(bootstrap: str, topic: str) -> list[tuple[int, int, bytes, bytes]]:
    """(partition, offset, key, value) of every committed record of `topic`, in partition order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-session-reader", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "fetch.wait.max.ms": 50})
    parts = sorted(consumer.list_topics(topic, timeout=15).topics[topic].partitions)
    # the ends as `perpline topics` finds them: the embedded broker's ListOffsets answer is low after
    # multi-record batches (docs/broker-notes.md), so it is corrected by a fetch
    ends = topics_tool.watermarks(consumer, [TopicPartition(topic, p) for p in parts])
    highs = {p: ends[(topic, p)][1] for p in parts}
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[tuple[int, int, bytes, bytes]] = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 3:
        batch = consumer.consume(10_000, 0.5)
        if batch:
            idle_since = time.monotonic()
        out.extend((msg.partition(), msg.offset(), msg.key() or b"", msg.value() or b"") for msg in batch
                   if msg.error() is None)
        positions = consumer.position([TopicPartition(topic, p) for p in parts])
        if all(tp.offset >= highs[tp.partition] for tp in positions):
            break
    consumer.close()
    out.sort(key=lambda r: (r[0], r[1]))
    return out


def watermarks(bootstrap: str, names: list[str]) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-session-probe"})
    parts = [TopicPartition(topic, p) for topic in names
             for p in sorted(consumer.list_topics(topic, timeout=15).topics[topic].partitions)]
    ends = topics_tool.watermarks(consumer, parts)  # corrected ends (read_log)
    consumer.close()
    return [ends[(tp.topic, tp.partition)][1] for tp in parts]


# --- the undisturbed replay ----------------------------------------------------------------------


def replay_matcher(orders: list[tuple[int, int, bytes, bytes]]) -> dict[str, list[bytes]]:
    """symbol -> the encoded events a fresh engine gives for the `orders` log, in seq order."""
    core = load_core()
    engines: dict[str, Any] = {}
    out: dict[str, list[bytes]] = defaultdict(list)
    for _, _, _, raw in orders:
        try:
            cmd = codec.decode("orders", raw)
            engine = engines.setdefault(cmd.symbol, core.Engine(cmd.symbol, core.EngineConfig()))
            out[cmd.symbol].extend(codec.encode(ev) for ev in convert.apply(engine, core, cmd))
        except (UnitError, ValueError, KeyError, msgspec.DecodeError):
            continue  # dead-lettered by the matcher as well
    return out


def dedup_events(events: list[tuple[int, int, bytes, bytes]]) -> tuple[dict[str, list[bytes]], list[str]]:
    """symbol -> events by seq (first copy of each seq), and any problem: a gap or a seq whose copies differ."""
    by_seq: dict[str, dict[int, bytes]] = defaultdict(dict)
    problems = []
    for _, _, _, raw in events:
        ev = codec.decode("matcher.events", raw)
        seen = by_seq[ev.symbol].get(ev.seq)
        if seen is not None and seen != raw:
            problems.append(f"{ev.symbol} seq {ev.seq} emitted twice with different content")
        by_seq[ev.symbol].setdefault(ev.seq, raw)
    out = {}
    for symbol, seqs in by_seq.items():
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            problems.append(f"{symbol}: matcher seq has gaps")
        out[symbol] = [seqs[s] for s in sorted(seqs)]
    return out, problems


class LiveView:
    """What the accounts processor published (account.events, ledger.entries, dead.letters), read back and
    de-duplicated. On the embedded broker a killed transaction's records can reappear in a topic after
    the fact, so the account.commands log is not exactly what the processor consumed at the time and a
    replay of it is not a sound oracle; the processor's own outputs, checked against the matcher's trade
    stream and the ledger's invariants, are."""

    def __init__(self, bootstrap: str, names: dict[str, str]) -> None:
        self.journals: dict[str, m.Journal] = {}
        self.balances: dict[tuple[int, str], m.BalanceChanged] = {}
        self.positions: dict[tuple[int, str], m.PositionChanged] = {}
        self.orders: dict[tuple[int, int], m.OrderView] = {}
        self.results: dict[str, m.CommandResult] = {}
        self.fees: dict[tuple[int, int, int], Decimal] = {}  # (account, trade, order) -> fee
        self.conflicts: list[str] = []
        for _, _, _, raw in read_log(bootstrap, names["ledger.entries"]):
            journal = codec.decode("ledger.entries", raw)
            seen = self.journals.setdefault(journal.journal_id, journal)
            if seen.postings != journal.postings:
                self.conflicts.append(f"journal {journal.journal_id} published twice with different postings")
        for _, _, _, raw in read_log(bootstrap, names["account.events"]):
            ev = codec.decode("account.events", raw)
            if isinstance(ev, m.BalanceChanged):
                self.balances[(ev.account_id, ev.asset)] = ev
            elif isinstance(ev, m.PositionChanged):
                self.positions[(ev.account_id, ev.symbol)] = ev
            elif isinstance(ev, m.OrderChanged):
                self.orders[(ev.account_id, ev.order.order_id)] = ev.order
            elif isinstance(ev, m.CommandResult):
                self.results[ev.request_id] = ev
            elif isinstance(ev, m.FillRecorded):
                self.fees[(ev.account_id, ev.trade_id, ev.order_id)] = Decimal(ev.fee)
        self.dead = 0
        self.dead_reasons: list[str] = []
        for _, _, key, raw in read_log(bootstrap, names["dead.letters"]):
            self.dead += 1
            letter = codec.decode("dead.letters", raw)
            if "unknown field `not`" not in letter.error and "truncated" not in letter.error.lower():
                self.dead_reasons.append(f"{key.decode()}: {letter.error[:200]}")

    @property
    def fees_charged(self) -> Decimal:
        return sum(self.fees.values(), Decimal(0))


# --- the checks ------------------------------------------------------------------------------------


def verify(stack: Stack) -> tuple[list[str], dict[str, Any]]:
    bootstrap, names = stack.value("kafka"), topic_map()
    problems: list[str] = []
    events, seq_problems = dedup_events(read_log(bootstrap, names["matcher.events"]))
    problems += seq_problems
    orders = read_log(bootstrap, names["orders"])
    expected = replay_matcher(orders)
    for symbol in set(expected) | set(events):
        if expected.get(symbol, []) != events.get(symbol, []):
            problems.append(f"{symbol}: matcher.events differ from a replay of orders "
                            f"({len(events.get(symbol, []))} vs {len(expected.get(symbol, []))})")
    commands = read_log(bootstrap, names["account.commands"])
    want_legs = set()
    for raws in events.values():
        last = 0
        for raw in raws:
            legs, last = legs_for(codec.decode("matcher.events", raw), last)
            want_legs |= {codec.encode(leg) for leg in legs}
    leg_types = (m.FillLeg, m.OrderDone, m.AmendDone)
    got_legs = set()
    for _, _, _, raw in commands:
        try:
            msg = codec.decode("account.commands", raw)
        except (ValueError, msgspec.DecodeError):
            continue
        if isinstance(msg, leg_types):
            got_legs.add(raw)
    if want_legs != got_legs:
        problems.append(f"settlement legs: {len(want_legs - got_legs)} missing, {len(got_legs - want_legs)} unexplained")

    replay = LiveView(bootstrap, names)
    problems += replay.conflicts
    problems += _compare_sizes(events, replay)
    problems += _compare_api(stack.api, replay)
    problems += _compare_ledger(stack, replay)
    fills = sum(1 for raw in got_legs if isinstance(codec.decode("account.commands", raw), m.FillLeg))
    refusals = Counter(r.code for r in replay.results.values() if not r.ok)  # as the processor answered them
    stats = {"orders_log": len(orders), "events": sum(len(v) for v in events.values()),
             "fill_legs": fills, "commands_log": len(commands), "journals": len(replay.journals),
             "refusals": sum(refusals.values()), "refusal_codes": dict(refusals.most_common()),
             "dead_letters": replay.dead, "dead_reasons": replay.dead_reasons[:10]}  # (injected garbage excluded)
    return problems, stats


def _compare_sizes(events: dict[str, list[bytes]], replay: LiveView) -> list[str]:
    """Every account's position from the trade stream itself (and ADL decisions) against the replay's."""
    sizes: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    for symbol, raws in events.items():
        for raw in raws:
            ev = codec.decode("matcher.events", raw)
            if isinstance(ev, m.Trade):
                signed = Decimal(ev.quantity) * (1 if ev.taker_side == "BUY" else -1)
                sizes[(ev.taker_account_id, symbol)] += signed
                sizes[(ev.maker_account_id, symbol)] -= signed
    problems = []
    for (acct, symbol), want in sorted(sizes.items()):
        got = replay.positions.get((acct, symbol))
        if Decimal(got.size if got else "0") != want:
            problems.append(f"account {acct} {symbol}: trades say {want}, the accounts processor {got.size if got else 0}")
    return problems


def _compare_api(api: str, replay: LiveView) -> list[str]:
    problems = []
    sizes: dict[str, Decimal] = defaultdict(Decimal)
    for acct in ACCOUNTS:
        headers = {"X-Account-Id": str(acct)}
        got_bal = {b["asset"]: b for b in httpx.get(f"{api}/api/v1/account/balances", headers=headers, timeout=30).json()}
        for (a, asset), want in replay.balances.items():
            if a != acct:
                continue
            fields = ("available", "order_margin", "position_margin", "wallet")
            if asset not in got_bal or any(Decimal(got_bal[asset][f]) != Decimal(getattr(want, f)) for f in fields):
                problems.append(f"account {acct} {asset}: API {got_bal.get(asset)} != replay {want}")
        open_now = sorted(oid for (a, oid), o in replay.orders.items() if a == acct and o.status in ("NEW", "PARTIALLY_FILLED"))
        usdt = replay.balances.get((acct, "USDT"))
        if not open_now and usdt is not None and Decimal(usdt.order_margin) != 0:
            problems.append(f"account {acct}: {usdt.order_margin} frozen with no open order")
        got_pos = {p["symbol"]: p for p in httpx.get(f"{api}/api/v1/account/positions", headers=headers, timeout=30).json()}
        for (a, symbol), want in replay.positions.items():
            if a != acct:
                continue
            sizes[symbol] += Decimal(want.size)
            fields = ("size", "entry_price", "margin", "realized_pnl")
            if symbol not in got_pos or any(Decimal(got_pos[symbol][f]) != Decimal(getattr(want, f)) for f in fields):
                problems.append(f"account {acct} {symbol}: API {got_pos.get(symbol)} != replay {want}")
        got_open = sorted(int(o["order_id"]) for o in httpx.get(f"{api}/api/v1/orders", headers=headers, timeout=30).json())
        if got_open != open_now:
            problems.append(f"account {acct}: open orders API {got_open} != published {open_now}")
    problems += [f"{symbol}: long and short open interest differ by {size}" for symbol, size in sizes.items() if size]
    return problems


def _compare_ledger(stack: Stack, replay: LiveView) -> list[str]:
    client = get_client(stack.clickhouse())
    rows = client.query("SELECT journal_id, posting_index, ledger_account, asset, toString(amount) "
                        "FROM ledger_postings FINAL ORDER BY journal_id, posting_index").result_rows
    stored: dict[str, list[tuple[str, str, Decimal]]] = defaultdict(list)
    for journal_id, _, ledger_account, asset, amount in rows:
        stored[journal_id].append((ledger_account, asset, Decimal(amount)))
    want = {jid: [(p.ledger_account, p.asset, Decimal(p.amount)) for p in j.postings] for jid, j in replay.journals.items()}
    ours = stored  # this stack saw no other activity
    problems = []
    if ours != want:
        missing = [j for j in want if j not in ours]
        extra = [j for j in ours if j not in want]
        differ = [j for j in want if j in ours and ours[j] != want[j]]
        problems.append(f"ledger: {len(missing)} journals missing, {len(extra)} extra, {len(differ)} differ "
                        f"(e.g. {(missing + extra + differ)[:3]})")
    unbalanced = [jid for jid, postings in stored.items()
                  if any(sum(a for _, asset, a in postings if asset == x) for x in {p[1] for p in postings})]
    if unbalanced:
        problems.append(f"ledger: {len(unbalanced)} journals do not sum to zero")
    trial = client.query("SELECT asset, sum(amount) FROM ledger_postings FINAL GROUP BY asset").result_rows
    problems += [f"trial balance {asset} = {total}" for asset, total in trial if total != 0]
    stored_fees = client.query("SELECT -sum(amount) FROM ledger_postings FINAL "
                               "WHERE ledger_account = 'platform:FEE_REVENUE'").result_rows[0][0]
    if Decimal(stored_fees) != replay.fees_charged or replay.fees_charged <= 0:
        problems.append(f"fee revenue {stored_fees} != fees charged on fills {replay.fees_charged}")
    for acct in ACCOUNTS:  # user accounts are liabilities: credit-normal, so the wallet is minus their sum
        wallet = parse_amount(replay.balances[(acct, "USDT")].wallet)
        ledger_wallet = -sum(a for jid, postings in stored.items() for name, asset, a in postings
                             if name.startswith(f"user:{acct}:") and asset == "USDT")
        if Decimal(format_amount(wallet)) != ledger_wallet:
            problems.append(f"account {acct}: wallet {format_amount(wallet)} != ledger {ledger_wallet}")
    return problems


@pytest.mark.timeout(900)
def test_thousands_of_orders_through_a_dozen_kills_end_exact(stack: Stack) -> None:
    bootstrap, names = stack.value("kafka"), topic_map()
    producer = Producer(producer_config(bootstrap))
    flow, rng = Flow(seed=20261125), random.Random(7)
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    def send(item: m.Msg | bytes, key: int | None = None) -> None:
        if isinstance(item, bytes):
            producer.produce(names["account.commands"], key=str(ACCOUNTS[0]).encode(), value=item, on_delivery=delivered)
        else:
            producer.produce(names["account.commands"], key=str(item.account_id).encode(), value=codec.encode(item),  # type: ignore[attr-defined]
                             on_delivery=delivered)

    for msg in flow.initial():
        send(msg)
    producer.flush(30)
    kills: list[str] = []
    order: list[str] = []
    started = last_kill = time.monotonic()
    for n in range(COMMANDS):
        send(flow.next())
        if n % (RATE_PER_S // 10) == 0:
            producer.poll(0)
            time.sleep(0.1)
        now = time.monotonic()
        if now - last_kill >= KILL_EVERY_S and n < COMMANDS * 0.9:
            if not order:  # each victim once per round, in a random order: the supervisor stops a stack
                order = rng.sample(VICTIMS, len(VICTIMS))  # whose component dies > 5 times a minute
            kills.append(kill_component(stack, order.pop()))
            last_kill = now
        if n in (COMMANDS // 3, 2 * COMMANDS // 3):
            _redeliver(bootstrap, names, producer)
    assert producer.flush(60) == 0 and not failed, (failed[:5], stack.lines[-30:])
    flow_s = time.monotonic() - started

    pipeline = [names[t] for t in ("account.commands", "orders", "matcher.events", "account.events", "ledger.entries",
                                   "positions", "dead.letters")]  # (prices.mark ticks every second by design)
    marks, stable_since = watermarks(bootstrap, pipeline), time.monotonic()
    deadline = time.monotonic() + VERIFY_TIMEOUT_S
    while time.monotonic() - stable_since < QUIET_S and time.monotonic() < deadline:
        time.sleep(1)
        now_marks = watermarks(bootstrap, pipeline)
        if now_marks != marks:
            marks, stable_since = now_marks, time.monotonic()
    problems, stats = verify(stack)
    while problems and time.monotonic() < deadline:  # a restarted component may still be catching up
        time.sleep(3)
        problems, stats = verify(stack)
    print({"kills": len(kills), "victims": kills, "flow_s": round(flow_s, 1), **stats})
    assert not problems, problems[:20]
    assert len([k for k in kills if k != "nothing"]) >= 10, kills
    assert stats["orders_log"] >= COMMANDS // 2 and stats["fill_legs"] >= COMMANDS // 4, stats
    assert len(stats["refusal_codes"]) >= 6 and stats["dead_letters"] >= 1, stats  # every kind of refusal met
    assert stats["dead_reasons"] == [], stats  # nothing but the injected garbage went to dead letters


def _redeliver(bootstrap: str, names: dict[str, str], producer: Producer) -> None:
    """Copies of already delivered matcher events and settlement legs, written again: both must be dropped."""
    for logical, sample in (("matcher.events", 40), ("account.commands", 40)):
        records = read_log(bootstrap, names[logical])
        if logical == "account.commands":
            records = [r for r in records if b'"fill_leg"' in r[3] or b'"order_done"' in r[3]]
        for _, _, key, raw in random.Random(len(records)).sample(records, min(sample, len(records))):
            producer.produce(names[logical], key=key, value=raw)
    producer.flush(30)
