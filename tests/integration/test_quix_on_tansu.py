"""A stateful exactly-once Quix processor on the embedded broker, through make_app and the io topic handles.

One input (keyed by account) fans out into two topics with different keys (account, symbol).
The processor is SIGKILLed mid-stream and restarted: no input may be lost and every output
must carry the state of exactly the inputs before it (a state applied twice would show).
Duplicated outputs after the kill are measured and reported (consumers dedupe anyway).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from conftest_broker import PY, BrokerProcess, Record, at_least, kill, read_all, running_broker

from perpline import REPO_ROOT
from perpline.broker.admin import ensure_topics, existing_topics
from perpline.config import producer_config
from perpline.contracts import topics

pytestmark = pytest.mark.integration

ACCOUNTS = [f"a{i}" for i in range(8)]
APP_STOP_TIMEOUT_S = 15.0

# The processor under test. FANOUT_MODE=branch: filter branches, one to_topic each;
# FANOUT_MODE=route: one to_topic with a callable choosing the topic.
APP_SOURCE = '''
import json, os, sys, time
from pathlib import Path
from perpline.contracts import topics as t
from perpline.pipelines import io
from perpline.pipelines.app import make_app

DELAY_S = float(os.environ.get("FANOUT_DELAY_S", "0"))


def out(topic, key, value):
    return {"t": topic, "k": key, "v": json.dumps(value).encode()}


def step(raw, state):
    try:
        value = json.loads(raw)
    except ValueError as exc:
        return [io.dead_letter("fanout-test", t.ACCOUNT_COMMANDS, raw, f"undecodable: {exc}")]
    if not isinstance(value.get("amount"), int):  # before any state write
        return [io.dead_letter("fanout-test", t.ACCOUNT_COMMANDS, raw, "malformed: amount must be an integer")]
    total, count = state.get("total", 0) + value["amount"], state.get("count", 0) + 1
    state.set("total", total)
    state.set("count", count)
    time.sleep(DELAY_S)
    acct, n = value["account"], value["n"]
    return [out(t.LEDGER_ENTRIES, acct, {"account": acct, "n": n, "total": total, "count": count}),
            out(t.POSITIONS, f"SYM{n % 3}", {"account": acct, "n": n, "total": total})]


app = make_app("fanout-test", state_dir=Path(sys.argv[1]), loglevel=os.environ.get("FANOUT_LOGLEVEL", "WARNING"))
sdf = app.dataframe(io.input_topic(app, t.ACCOUNT_COMMANDS))
routed = sdf.apply(step, stateful=True, expand=True)
outs = io.output_topics(app, [t.LEDGER_ENTRIES, t.POSITIONS, t.DEAD_LETTERS])
if os.environ["FANOUT_MODE"] == "branch":
    for name, topic in outs.items():
        routed.filter(lambda v, name=name: v["t"] == name).to_topic(topic, key=lambda v: v["k"])
else:
    io.to_topics(routed, outs)
if os.environ.get("FANOUT_PUSH"):  # ledger.entries pushed as each transaction commits (perpline.push)
    from perpline.push import PushServer
    from perpline.pipelines.push_commits import push_on_commit
    push_on_commit(app, PushServer(os.environ["FANOUT_PUSH"]), {t.physical(t.LEDGER_ENTRIES): t.LEDGER_ENTRIES})
app.run()
'''


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with running_broker() as running:
        yield running


class Processor:
    """The app above in a subprocess (app.run() blocks and owns the signal handlers)."""

    def __init__(self, tmp: Path, bootstrap: str, prefix: str, mode: str, delay_s: float = 0.0) -> None:
        self.script, self.state_dir, self.log = tmp / "fanout_app.py", tmp / "state", tmp / "app.log"
        self.script.write_text(APP_SOURCE)
        self.env = {**os.environ, "PERPLINE_KAFKA_BOOTSTRAP": bootstrap, "PERPLINE_TOPIC_PREFIX": prefix,
                    "FANOUT_MODE": mode, "FANOUT_DELAY_S": str(delay_s), "PERPLINE_DATA_DIR": str(tmp)}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, delay_s: float | None = None) -> float:
        if delay_s is not None:
            self.env["FANOUT_DELAY_S"] = str(delay_s)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([PY, str(self.script), str(self.state_dir)], cwd=REPO_ROOT, env=self.env,
                                         stdout=log, stderr=log)
        return time.monotonic()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(APP_STOP_TIMEOUT_S)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kill(self.proc)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@pytest.fixture
def processor(tmp_path: Path, broker: BrokerProcess, request: pytest.FixtureRequest) -> Iterator[Processor]:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    ensure_topics(broker.bootstrap, topic_prefix=prefix)
    mode = "branch" if "kill" in request.node.name else "route"
    proc = Processor(tmp_path, broker.bootstrap, prefix, mode)
    os.environ["PERPLINE_TOPIC_PREFIX"] = prefix  # for topics.physical() in this process
    try:
        yield proc
    finally:
        os.environ.pop("PERPLINE_TOPIC_PREFIX", None)
        proc.close()
        print(proc.tail())  # shown by pytest only when the test failed


def amount(account: str, n: int) -> int:
    return n * 10 + int(account[1:])


def produce(bootstrap: str, ns: range, extra: list[tuple[str, bytes]] | None = None) -> None:
    producer = Producer(producer_config(bootstrap))
    for n in ns:
        for acct in ACCOUNTS:
            value = json.dumps({"account": acct, "n": n, "amount": amount(acct, n)}).encode()
            producer.produce(topics.physical(topics.ACCOUNT_COMMANDS), value, key=acct.encode())
    for key, raw in extra or []:
        producer.produce(topics.physical(topics.ACCOUNT_COMMANDS), raw, key=key.encode())
    assert producer.flush(10) == 0


def read(bootstrap: str, name: str, done: Any, timeout_s: float, settle_s: float = 0.5,
         committed: bool = True) -> list[Record]:
    return read_all(bootstrap, topics.physical(name), topics.spec(name).partitions, timeout_s=timeout_s,
                    done=done, settle_s=settle_s, committed=committed)


def pairs(records: list[Record]) -> Counter[tuple[str, int]]:
    return Counter((r[1]["account"], r[1]["n"]) for r in records)


def all_pairs(last_n: int) -> Any:
    expected = {(a, n) for a in ACCOUNTS for n in range(1, last_n + 1)}
    return lambda records: set(pairs(records)) >= expected


def check_outputs(ledger: list[Record], positions: list[Record], last_n: int) -> None:
    expected = {(a, n) for a in ACCOUNTS for n in range(1, last_n + 1)}
    assert set(pairs(ledger)) == expected, "lost or extra ledger outputs"
    assert set(pairs(positions)) == expected, "lost or extra position outputs"
    for key, value, _p, _o in ledger:  # the state each output carries is that of exactly its inputs
        acct, n = value["account"], value["n"]
        assert key == acct and value["count"] == n
        assert value["total"] == sum(amount(acct, i) for i in range(1, n + 1))
    for key, value, _p, _o in positions:
        assert key == f"SYM{value['n'] % 3}"
        assert value["total"] == sum(amount(value["account"], i) for i in range(1, value["n"] + 1))


def test_stateful_fanout_survives_sigkill(broker: BrokerProcess, processor: Processor) -> None:
    first, second = range(1, 41), range(41, 61)
    produce(broker.bootstrap, first)
    started = processor.start(delay_s=0.01)  # slow enough to be killed mid-stream (320 inputs ~ 3 s)
    seen = read(broker.bootstrap, topics.LEDGER_ENTRIES, at_least(60), timeout_s=30, settle_s=0)
    first_output_s = time.monotonic() - started
    assert len(seen) >= 60, processor.tail()
    processor.stop(signal.SIGKILL)
    produce(broker.bootstrap, second)

    restarted = processor.start(delay_s=0)
    ledger = read(broker.bootstrap, topics.LEDGER_ENTRIES, all_pairs(60), timeout_s=45)
    resumed_s = time.monotonic() - restarted
    positions = read(broker.bootstrap, topics.POSITIONS, all_pairs(60), timeout_s=10)
    uncommitted = read(broker.bootstrap, topics.LEDGER_ENTRIES, at_least(len(ledger)), timeout_s=10,
                       committed=False)
    assert processor.stop() == 0, processor.tail()

    check_outputs(ledger, positions, 60)
    report = {"inputs": 480, "killed_after_outputs": len(seen), "first_output_s": round(first_output_s, 2),
              "restart_to_complete_s": round(resumed_s, 2),
              "ledger_records": len(ledger), "ledger_duplicates": len(ledger) - len(pairs(ledger)),
              "position_duplicates": len(positions) - len(pairs(positions)),
              "ledger_records_read_uncommitted": len(uncommitted)}
    print("QUIX_ON_TANSU", json.dumps(report))
    changelogs = [t for t in existing_topics(broker.bootstrap) if t.startswith("changelog__")
                  and topics.prefix() in t]
    assert changelogs, "Quix created no changelog topic"


def test_dead_letters_and_routed_fanout(broker: BrokerProcess, processor: Processor) -> None:
    bad = [("a1", b"{not json"), ("a2", json.dumps({"account": "a2", "n": 9, "amount": "x"}).encode())]
    produce(broker.bootstrap, range(1, 3), extra=bad)
    produce(broker.bootstrap, range(3, 4))
    processor.start()
    ledger = read(broker.bootstrap, topics.LEDGER_ENTRIES, all_pairs(3), timeout_s=30)
    letters = read(broker.bootstrap, topics.DEAD_LETTERS, at_least(2), timeout_s=10)
    positions = read(broker.bootstrap, topics.POSITIONS, all_pairs(3), timeout_s=10)
    assert processor.stop() == 0, processor.tail()
    check_outputs(ledger, positions, 3)  # the malformed input changed no state
    assert sorted(v["error"].split(":")[0] for _k, v, _p, _o in letters) == ["malformed", "undecodable"]
    for key, value, _p, _o in letters:
        assert key == "fanout-test" and value["source"] == "fanout-test"
        assert value["topic"] == topics.physical(topics.ACCOUNT_COMMANDS) and value["offset"] >= 0
        assert value["causation_id"] == f"{value['topic']}:{value['partition']}:{value['offset']}"
    assert {v["payload"] for _k, v, _p, _o in letters} >= {"{not json"}


def test_pushed_records_are_the_committed_records_at_their_offsets(processor: Processor, broker: BrokerProcess) -> None:
    """perpline.pipelines.push_commits on a real exactly-once app: every record pushed after a commit is the
    record the topic holds at that offset (the read model moves its positions by them), and where a frame
    says nothing committed lies before its first record (`clear_from`), the topic agrees."""
    from perpline.push import NO_OFFSET, Frame, PushClient, wait_connected  # noqa: PLC0415
    from perpline.stack.supervisor import free_port  # noqa: PLC0415

    address = f"127.0.0.1:{free_port()}"
    processor.env["FANOUT_PUSH"] = address
    frames: list[Frame] = []
    client = PushClient([address], frames.append)
    client.start()
    try:
        processor.start()
        assert wait_connected(client, 1, 60), processor.tail()
        produce(broker.bootstrap, range(1, 21))
        time.sleep(1.0)  # a second burst: later commits follow earlier ones of the same writer
        produce(broker.bootstrap, range(21, 41))
        ledger = read(broker.bootstrap, topics.LEDGER_ENTRIES, all_pairs(40), timeout_s=90)
        deadline = time.monotonic() + 10
        while sum(len(f.offsets) for f in frames) < len(ledger) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.stop()
    held = {(p, o): value for _key, value, p, o in ledger}
    pushed = [(f.partition, o, json.loads(v)) for f in frames for o, v in zip(f.offsets, f.values, strict=True)]
    assert len(pushed) == len(held), "every committed record was pushed once"
    assert all(held[(p, o)] == value for p, o, value in pushed), "a pushed record differs from the topic's at its offset"
    claims = [f for f in frames if f.clear_from != NO_OFFSET]
    assert claims, "no frame followed the same writer's previous commit"
    for f in claims:
        assert not [o for o in range(f.clear_from, f.offsets[0]) if (f.partition, o) in held], f
