"""Pushed records (perpline.push, perpline.pipelines.push_commits, perpline.api.pushed): the wire, the
writer's commit rule, and the read model's rule that a push never changes what the views end with."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from perpline import push
from perpline.api import pushed
from perpline.api.readmodel import ReadModel
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.matcher import convert
from perpline.matcher.loader import load_core
from perpline.pipelines.push_commits import CommitPusher
from tests.unit.test_depth_updates import flow

META = {"trace_id": "t", "causation_id": "c", "ts_ms": 1}
TOPICS = {"account.events": "account.events", "matcher.events": "matcher.events"}
SYM = "BTCUSDT-PERP"


def balance(version: int, wallet: str = "100") -> bytes:
    return codec.encode(m.BalanceChanged(**META, account_id=7, asset="USDT", available=wallet, order_margin="0",
                                         position_margin="0", wallet=wallet, version=version))


def result(request_id: str) -> bytes:
    return codec.encode(m.CommandResult(**META, request_id=request_id, account_id=7, ok=True, code=0, order_id=1))


class FakeMsg:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return (1, 1)


def model_at(position: int) -> ReadModel:
    rm = ReadModel("unused:1", TOPICS)
    rm.positions()["account.events"] = {0: position}
    return rm


def from_topic(rm: ReadModel, offset: int, value: bytes) -> None:
    rm._on_message(FakeMsg("account.events", 0, offset, value), {v: k for k, v in TOPICS.items()})  # noqa: SLF001


def wallet_of(rm: ReadModel) -> str:
    return rm.accounts.balances(7)["USDT"].wallet


# --- the read model's rule -------------------------------------------------------------------------
def test_a_frame_that_continues_the_position_is_applied_and_the_topics_copy_is_skipped() -> None:
    rm = model_at(10)
    frame = push.Frame("account.events", 0, push.NO_OFFSET, [10, 11], [balance(1, "100"), result("r1")])
    assert pushed.apply_frame(rm, frame) == 2
    assert rm.positions()["account.events"][0] == 12
    assert wallet_of(rm) == "100" and rm.result(7, "r1") is not None
    from_topic(rm, 12, balance(2, "90"))  # the topic goes on past what was pushed
    from_topic(rm, 10, balance(1, "100"))  # the topic brings the pushed records later: skipped
    assert wallet_of(rm) == "90" and rm.positions()["account.events"][0] == 13


def test_a_frame_after_a_gap_is_left_to_the_topic() -> None:
    rm = model_at(10)
    assert pushed.apply_frame(rm, push.Frame("account.events", 0, push.NO_OFFSET, [12], [balance(5)])) == 0
    assert pushed.apply_frame(rm, push.Frame("account.events", 0, 11, [12], [balance(5)])) == 0  # clear from 11 > 10
    assert rm.accounts.balances(7) == {} and rm.positions()["account.events"][0] == 10
    from_topic(rm, 10, balance(1, "1"))
    assert wallet_of(rm) == "1"


def test_a_frame_whose_gap_holds_only_the_writers_marker_is_applied() -> None:
    rm = model_at(11)  # the reader has the writer's record 10; 11 is its commit marker
    assert pushed.apply_frame(rm, push.Frame("account.events", 0, 11, [12, 13], [balance(1), balance(2, "5")])) == 2
    assert wallet_of(rm) == "5" and rm.positions()["account.events"][0] == 14


def test_a_frame_partly_behind_the_position_applies_only_what_is_new() -> None:
    rm = model_at(10)
    from_topic(rm, 10, balance(1, "1"))
    assert pushed.apply_frame(rm, push.Frame("account.events", 0, push.NO_OFFSET, [10, 11], [balance(1, "1"),
                                                                                          balance(2, "2")])) == 1
    assert wallet_of(rm) == "2" and rm.positions()["account.events"][0] == 12


def test_a_topic_record_that_differs_from_the_push_at_its_offset_is_applied_and_counted() -> None:
    rm = model_at(0)
    before = pushed.MISMATCHED._value.get()  # noqa: SLF001
    pushed.apply_frame(rm, push.Frame("account.events", 0, push.NO_OFFSET, [0], [balance(1, "1")]))
    from_topic(rm, 0, balance(3, "3"))
    assert wallet_of(rm) == "3" and pushed.MISMATCHED._value.get() == before + 1  # noqa: SLF001


def test_matcher_events_are_applied_only_as_the_next_seq() -> None:
    core = load_core(pure=True)
    engine = core.Engine(SYM, core.EngineConfig())
    events = [ev for cmd in flow(40, seed=3) for ev in convert.apply(engine, core, cmd)]
    assert len(events) > 5
    rm, ref = ReadModel("unused:1", TOPICS), ReadModel("unused:1", TOPICS)
    for ev in events:
        ref.apply("matcher.events", ev)
    values = [codec.encode(ev) for ev in events]
    assert pushed.apply_frame(rm, push.Frame("matcher.events", push.NO_OFFSET, push.NO_OFFSET, [], values[2:4])) == 0
    assert pushed.apply_frame(rm, push.Frame("matcher.events", push.NO_OFFSET, push.NO_OFFSET, [], values[:3])) == 3
    for ev in events:  # the topic brings all of them: the pushed ones are duplicates
        rm.apply("matcher.events", ev)
    assert rm.book_seq(SYM) == ref.book_seq(SYM) == events[-1].seq
    assert rm.depth(SYM, 100) == ref.depth(SYM, 100)


# --- the writer's commit rule ----------------------------------------------------------------------
class Captured:
    def __init__(self) -> None:
        self.frames: list[push.Frame] = []

    def publish(self, frame: push.Frame) -> None:
        self.frames.append(frame)


def delivered(pusher: CommitPusher, offset: int, value: bytes, topic: str = "p.account.events") -> None:
    pusher.delivered(FakeMsg(topic, 0, offset, value))


def test_a_commit_pushes_its_records_and_says_when_only_its_marker_lies_between() -> None:
    server = Captured()
    pusher = CommitPusher(server, {"p.account.events": "account.events"})  # type: ignore[arg-type]
    delivered(pusher, 5, b"b")
    delivered(pusher, 4, b"a")
    delivered(pusher, 9, b"x", topic="p.orders")  # not a pushed topic
    pusher.committed()
    delivered(pusher, 7, b"c")  # 6: the first commit's marker
    pusher.committed()
    delivered(pusher, 10, b"d")  # 8 and 9: someone else's, or an abort's: nothing can be said
    pusher.committed()
    assert [(f.topic, f.offsets, f.values, f.clear_from) for f in server.frames] == [
        ("account.events", [4, 5], [b"a", b"b"], push.NO_OFFSET),
        ("account.events", [7], [b"c"], 6),
        ("account.events", [10], [b"d"], push.NO_OFFSET)]


def test_an_aborted_transaction_pushes_nothing_and_forgets_what_it_knew() -> None:
    server = Captured()
    pusher = CommitPusher(server, {"p.account.events": "account.events"})  # type: ignore[arg-type]
    delivered(pusher, 0, b"a")
    pusher.committed()
    delivered(pusher, 2, b"lost")
    pusher.aborted()
    pusher.committed()
    delivered(pusher, 2, b"b")
    pusher.committed()
    assert [(f.offsets, f.clear_from) for f in server.frames] == [([0], push.NO_OFFSET), ([2], push.NO_OFFSET)]


# --- the wire --------------------------------------------------------------------------------------
def test_frames_reach_every_reader_and_a_reader_that_never_reads_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push, "MAX_QUEUED_BYTES", 256 * 1024)
    server = push.PushServer("127.0.0.1:0")
    got: list[push.Frame] = []
    client = push.PushClient([f"127.0.0.1:{server.port}"], got.append)
    client.start()
    stuck = socket.create_connection(("127.0.0.1", server.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        assert push.wait_connected(client, 1, 5)
        deadline = time.monotonic() + 5
        while server.readers() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.readers() == 2
        big = b"x" * 60_000
        sent = 0
        while server.readers() == 2 and sent < 2_000:  # the stuck reader's socket and queue fill, then it is dropped
            server.publish(push.Frame("account.events", 0, push.NO_OFFSET, [sent], [big]))
            sent += 1
            time.sleep(0.001)
        assert server.readers() == 1, "a reader that never reads is dropped"
        deadline = time.monotonic() + 10
        while len(got) < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [f.offsets[0] for f in got] == list(range(sent)), "the reading client got every frame, in order"
    finally:
        client.stop()
        stuck.close()
        server.close()


def test_a_bad_address_is_refused() -> None:
    for bad in ("nohost", "host:", ":80", "host:port"):
        with pytest.raises(ValueError):
            push.parse_address(bad)


def test_an_oversized_frame_is_not_pushed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push, "MAX_FRAME_BYTES", 1000)
    server = push.PushServer("127.0.0.1:0")
    got: list[Any] = []
    client = push.PushClient([f"127.0.0.1:{server.port}"], got.append)
    client.start()
    try:
        assert push.wait_connected(client, 1, 5)
        deadline = time.monotonic() + 5
        while server.readers() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.publish(push.Frame("account.events", 0, push.NO_OFFSET, [0], [b"x" * 2000]))
        server.publish(push.Frame("account.events", 0, push.NO_OFFSET, [1], [b"y"]))
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [f.offsets for f in got] == [[1]]
    finally:
        client.stop()
        server.close()


def test_a_symbol_whose_next_seq_is_missing_does_not_hold_up_another_symbols_events() -> None:
    core = load_core(pure=True)
    btc, eth = core.Engine(SYM, core.EngineConfig()), core.Engine("ETHUSDT-PERP", core.EngineConfig())
    flow_btc = [ev for cmd in flow(10, seed=4) for ev in convert.apply(btc, core, cmd)]
    eth_cmds = [m.NewOrder(**{**META}, order_id=1000 + i, account_id=1, symbol="ETHUSDT-PERP", side="BUY",
                           order_type="LIMIT", time_in_force="GTC", price="3000.00", quantity="0.10",
                           client_order_id=f"e{i}") for i in range(3)]  # type: ignore[arg-type]
    flow_eth = [ev for cmd in eth_cmds for ev in convert.apply(eth, core, cmd)]
    rm = ReadModel("unused:1", TOPICS)
    mixed = [codec.encode(ev) for ev in (flow_btc[1], flow_eth[0], flow_btc[2], *flow_eth[1:])]  # BTC's seq 1 missing
    assert pushed.apply_frame(rm, push.Frame("matcher.events", push.NO_OFFSET, push.NO_OFFSET, [], mixed)) == len(flow_eth)
    assert rm.book_seq("ETHUSDT-PERP") == flow_eth[-1].seq and rm.book_seq(SYM) == 0


def test_a_pushed_funding_round_is_shown_once_when_the_topic_brings_it_again() -> None:
    rm = ReadModel("unused:1", TOPICS)
    rounds = [m.FundingRound(**META, symbol=SYM, funding_time_ms=t, rate="0.00010000", mark_price="50000.00",
                             positions=2, paid="0.5", received="0.5") for t in (8_000, 16_000)]
    assert pushed.apply_frame(rm, push.Frame("funding.rounds", push.NO_OFFSET, push.NO_OFFSET, [],
                                             [codec.encode(rounds[0])])) == 1
    for r in rounds:  # the topic: the pushed round again, then the next one
        rm.apply("funding.rounds", r)
    assert [r.funding_time_ms for r in rm.prices.funding_rounds(SYM)] == [8_000, 16_000]
