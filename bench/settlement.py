"""Settlement benchmark: the accounts processor and the ledger sink on the embedded broker and ClickHouse,
each next to a baseline measured in the same run. Prints one JSON object; nothing here is a test.

    python -m bench.settlement [--accounts 200] [--orders 20]

1. `account.commands` is preloaded: per account one deposit, then `--orders` limit orders, then a
   full taker fill leg for each of them (order ids are deterministic, so the legs are known ahead).
2. The accounts processor, run as the stack runs it (`python -m perpline.pipelines.accounts`: run_stateful's
   settings, PERPLINE_PROCESSING_GUARANTEE, exactly-once by default), consumes all of it: commands/s and
   settlement legs/s, from ready until its committed offsets reach the end of the topic.
3. Baseline: a pass-through Quix processor (same make_app settings and the same guarantee, so the same
   one-record batches under at-least-once; no state) over the same topic to a scratch topic: commands/s.
   Ratio = accounts / pass-through. On the embedded broker both are bound by the records they produce
   (one-record batches cost the broker about the same whatever their partition): the pass-through
   produces one per command, the accounts processor about six (README, "Settlement benchmark").
4. The ledger sink loads what the accounts processor journaled into ClickHouse: posting rows/s until
   every distinct (journal_id, posting_index) row read from ledger.entries is there (a journal read twice
   is one row in the ReplacingMergeTree). A sink that stops making progress for STALL_S, or exits, ends
   the phase with a diagnosis (which partitions and offsets are missing, the sink's log) instead of a hang.
   Baseline: the same rows in one bulk insert with clickhouse-connect into a table of the same schema.
   Ratio = sink / direct.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.topic import start_broker
from perpline import REPO_ROOT
from perpline.ch.client import get_client, wait_ready
from perpline.ch.users import ADMIN_USER, USERS_DIR_NAME, ensure_passwords, with_credentials
from perpline.config import producer_config
from perpline.contracts import codec, ids
from perpline.contracts import messages as m
from perpline.pipelines.ledger_sink_logic import POSTING_COLUMNS, posting_rows
from perpline.stack.supervisor import free_port
from perpline.topics_tool import watermarks

TIMEOUT_S = 900.0
QUIET_S = 3.0  # the journals reader stops after this long without a record (the topic is complete by then)
SYMBOL = "BTCUSDT-PERP"


def commands(accounts: int, orders: int) -> list[tuple[str, m.Msg]]:
    meta = {"trace_id": "bench", "causation_id": "bench", "ts_ms": 1_700_000_000_000}
    out: list[tuple[str, m.Msg]] = []
    seq = 0
    for n in range(accounts):
        acct = 1000 + n
        out.append((str(acct), m.Deposit(**meta, request_id=f"d{acct}", account_id=acct, asset="USDT", amount="1000000")))
        for k in range(1, orders + 1):
            out.append((str(acct), m.PlaceOrder(**meta, request_id=f"p{acct}-{k}", account_id=acct, symbol=SYMBOL,
                                                side="BUY", order_type="LIMIT", price="50000", quantity="0.010",
                                                client_order_id=f"c{k}")))
        for k in range(1, orders + 1):
            seq += 1
            out.append((str(acct), m.FillLeg(**meta, account_id=acct, symbol=SYMBOL, seq=seq, trade_id=seq,
                                             order_id=ids.order_id_for(acct, k), liquidity="TAKER", side="BUY",
                                             price="50000.00", quantity="0.010", order_leaves="0.000")))
    return out


def preload(bootstrap: str, topic: str, items: list[tuple[str, m.Msg]]) -> None:
    producer = Producer(producer_config(bootstrap, **{"batch.num.messages": 10000}))
    for key, msg in items:
        producer.produce(topic, key=key.encode(), value=codec.encode(msg))
        producer.poll(0)
    assert producer.flush(60) == 0


def _ends(bootstrap: str, topic: str) -> list[TopicPartition]:
    """Each partition's end. Not the broker's ListOffsets answer alone: the embedded broker's is low after
    multi-record batches (the bench then stopped timing, and reading journals, before the end)."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe", "enable.auto.commit": False})
    parts = probe.list_topics(topic, timeout=15).topics[topic].partitions
    marks = watermarks(probe, [TopicPartition(topic, p) for p in parts])
    probe.close()
    return [TopicPartition(topic, p, high) for (_, p), (_, high) in sorted(marks.items())]


def _wait_committed(bootstrap: str, group: str, ends: list[TopicPartition], started: float) -> float:
    watcher = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        want = {(tp.partition): tp.offset for tp in ends}
        while True:
            assert time.monotonic() - started < TIMEOUT_S, "processor did not finish"
            got = {tp.partition: tp.offset for tp in watcher.committed([TopicPartition(t.topic, t.partition) for t in ends],
                                                                        timeout=10)}
            if all(got.get(p, -1) >= off for p, off in want.items()):
                return time.monotonic() - started
            time.sleep(0.05)
    finally:
        watcher.close()


def _run(argv: list[str], env: dict[str, str], ready: Path) -> subprocess.Popen[bytes]:
    """Start a processor, its output in <ready>.log (read back when a phase does not finish)."""
    with ready.with_suffix(".log").open("wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env={**env, "PERPLINE_READY_FILE": str(ready)},
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, f"{argv[2]} did not start"
        time.sleep(0.01)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


PASSTHROUGH = """
from perpline.config import processing_guarantee
from perpline.pipelines import io
from perpline.pipelines.app import make_app
from perpline.pipelines.runtime import ready_on_assign
app = make_app("bench-passthrough", processing_guarantee=processing_guarantee())
out = app.topic("bench.passthrough", value_serializer="bytes", key_serializer="str")
app.dataframe(io.input_topic(app, "account.commands")).to_topic(out)
ready_on_assign(app)
app.run()
"""


def journals(bootstrap: str, topic: str, count_hint: int) -> list[list[Any]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-journals", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    ends = _ends(bootstrap, topic)
    consumer.assign([TopicPartition(topic, tp.partition, 0) for tp in ends])
    want = sum(tp.offset for tp in ends)
    rows: list[list[Any]] = []
    seen = 0
    deadline = time.monotonic() + 120
    quiet_since = time.monotonic()
    while seen < want and time.monotonic() < deadline and time.monotonic() - quiet_since < QUIET_S:
        for msg in consumer.consume(10_000, timeout=0.5):  # (offsets also count transaction markers: want is high)
            quiet_since = time.monotonic()
            if msg.error() is None:
                seen += 1
                rows.extend(posting_rows(codec.decode("ledger.entries", msg.value()), msg.partition(), msg.offset()))
    consumer.close()
    assert rows, "no journals"
    return rows


STALL_S = 60.0


def _wait_rows(client: Any, want: int, started: float, sink: subprocess.Popen[bytes]) -> float | None:
    """Seconds until ledger_postings holds `want` distinct rows, or None once it has not grown for STALL_S
    or the sink has exited (its output went nowhere before, so a sink that died looked like a slow one)."""
    last, grew = -1, time.monotonic()
    while sink.poll() is None:
        have = client.query("SELECT count() FROM ledger_postings FINAL").result_rows[0][0]
        if have >= want:
            return time.monotonic() - started
        if have != last:
            last, grew = have, time.monotonic()
        if time.monotonic() - grew > STALL_S or time.monotonic() - started > TIMEOUT_S:
            return None
        time.sleep(0.05)
    return None


def _diagnose(client: Any, rows: list[list[Any]]) -> dict[str, Any]:
    """Where the missing rows are: per source partition, how many and which offsets the journals have and the
    table has; the missing by ref_type; and whether the table has rows the journals do not (duplicates)."""
    have = {(r[0], r[1]) for r in client.query("SELECT journal_id, posting_index FROM ledger_postings").result_rows}
    missing = [r for r in rows if (r[0], r[1]) not in have]
    by_part: dict[int, dict[str, Any]] = {}
    for r in rows:
        part = by_part.setdefault(r[12], {"rows": 0, "missing": 0, "min_missing_offset": None, "max_offset": 0})
        part["rows"] += 1
        part["max_offset"] = max(part["max_offset"], r[13])
    for r in missing:
        part = by_part[r[12]]
        part["missing"] += 1
        low = part["min_missing_offset"]
        part["min_missing_offset"] = r[13] if low is None else min(low, r[13])
    table = client.query("SELECT count(), uniqExact(journal_id, posting_index) FROM ledger_postings").result_rows[0]
    ref_types: dict[str, int] = {}
    for r in missing:
        ref_types[r[2]] = ref_types.get(r[2], 0) + 1
    return {"table_rows": table[0], "table_distinct": table[1], "missing": len(missing), "missing_by_ref_type": ref_types,
            "partitions": {p: v for p, v in sorted(by_part.items()) if v["missing"]}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--orders", type=int, default=20)
    args = parser.parse_args()
    items = commands(args.accounts, args.orders)
    legs = args.accounts * args.orders
    broker, bootstrap = start_broker()
    ch_port = free_port()
    with tempfile.TemporaryDirectory(prefix="perpline-bench-") as tmp:
        password = ensure_passwords(Path(tmp) / USERS_DIR_NAME)[ADMIN_USER]
        ch = subprocess.Popen([sys.executable, "-m", "perpline.ch.server", "--data-dir", f"{tmp}/ch", "--port",
                               str(ch_port)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = with_credentials(f"http://127.0.0.1:{ch_port}", ADMIN_USER, password)
        env = {**os.environ, "PERPLINE_KAFKA_BOOTSTRAP": bootstrap, "PERPLINE_CLICKHOUSE_URL": url}
        try:
            preload(bootstrap, "account.commands", items)
            ends = _ends(bootstrap, "account.commands")

            proc = _run([sys.executable, "-c", PASSTHROUGH], env, Path(tmp) / "pass.ready")
            pass_s = _wait_committed(bootstrap, "bench-passthrough", ends, time.monotonic())
            _stop(proc)

            proc = _run([sys.executable, "-m", "perpline.pipelines.accounts", "--state-dir", f"{tmp}/state"], env,
                        Path(tmp) / "accounts.ready")
            accounts_s = _wait_committed(bootstrap, "perpline-accounts", ends, time.monotonic())
            _stop(proc)

            rows = journals(bootstrap, "ledger.entries", legs)
            keys = {(r[0], r[1]) for r in rows}
            wait_ready(url, timeout_s=60)
            proc = _run([sys.executable, "-m", "perpline.pipelines.ledger_sink"], env, Path(tmp) / "sink.ready")
            client = get_client(url)
            started = time.monotonic()
            sink_s = _wait_rows(client, len(keys), started, proc)
            _stop(proc)
            if sink_s is None:
                print(json.dumps({"rows_read": len(rows), "distinct_keys": len(keys), "sink_exit": proc.returncode,
                                  "diagnosis": _diagnose(client, rows),
                                  "sink_log_tail": (Path(tmp) / "sink.log").read_text(errors="replace")[-3000:]}),
                      flush=True)

            client.command("CREATE TABLE bench_postings AS ledger_postings")
            started = time.monotonic()
            client.insert("bench_postings", rows, column_names=POSTING_COLUMNS)
            direct_s = time.monotonic() - started
        finally:
            ch.terminate()
            ch.wait(30)
            broker.terminate()
            broker.wait(30)
    n = len(items)
    print(json.dumps({
        "commands": n, "settlement_legs": legs, "posting_rows": len(keys), "posting_rows_read_twice": len(rows) - len(keys),
        "accounts_commands_per_s": round(n / accounts_s), "accounts_legs_per_s": round(legs / accounts_s),
        "passthrough_commands_per_s": round(n / pass_s), "accounts_vs_passthrough": round(pass_s / accounts_s, 2),
        "sink_rows_per_s": round(len(rows) / sink_s) if sink_s else "stalled",
        "direct_insert_rows_per_s": round(len(rows) / direct_s),
        "sink_vs_direct": round(direct_s / sink_s, 2) if sink_s else None}))


if __name__ == "__main__":
    main()
