"""How fast a new API replica is ready, and how much memory it takes, after a long history: the full
replay from offset 0 against the start from the newest read-model checkpoint, in the same run.

    python -m bench.replica [--events 1000000] [--tail 99000] [--accounts 1000]

A plain stack supplies the broker and ClickHouse. The history is written straight onto a private set of
topics (PERPLINE_TOPIC_PREFIX, so the stack's processors never see it): the matcher's events of a real
engine run (perpline.matcher.convert on the compiled core) and, for each, the account events the
accounts processor would publish (orders, fills, balances, positions), plus marks. Then:
1. API process A with PERPLINE_API_START=replay: time until /readyz answers 200, its RSS; being caught
   up and PERPLINE_API_CHECKPOINT_EVENTS behind, it writes a checkpoint (the time to publish it is shown);
2. `--tail` more events (the most a checkpoint can be behind is the interval); once A has consumed them
   (its lag is 0: B does not share the two cores with A's catch-up), API process B with
   PERPLINE_API_START=checkpoint: time to ready (and to its checkpoint restored), its CPU, its RSS.
Both run with compiled bytecode (a cache in the data directory, filled once before A starts), as in the
image (Dockerfile: compiled at build); without it a process compiles every module it imports first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.api import REPO_ROOT, plain_stack
from perpline.config import producer_config, topic_map
from perpline.contracts import codec, topics
from perpline.contracts import messages as m
from perpline.matcher import convert
from perpline.matcher.loader import load_core
from perpline.obs import LAG_INTERVAL_S
from perpline.stack.supervisor import free_port

SYM = "BTCUSDT-PERP"
PREFIX = "replicabench-"
CHECKPOINT_EVENTS = 100_000


def meta(ts_ms: int) -> dict[str, Any]:
    return {"trace_id": "t", "causation_id": "c", "ts_ms": ts_ms}


class History:
    """An endless, realistic stream of (logical topic, key, message) from a real engine."""

    def __init__(self, accounts: int) -> None:
        self.core = load_core()
        self.engine = self.core.Engine(SYM, self.core.EngineConfig())
        self.accounts = accounts
        self.n = 0
        self.version = 0
        self.live: list[int] = []

    def __iter__(self) -> Iterator[tuple[str, str, Any]]:
        while True:
            self.n += 1
            for ev in convert.apply(self.engine, self.core, self._command()):
                yield "matcher.events", SYM, ev
                for acct_ev in self._account_events(ev):
                    yield "account.events", str(acct_ev.account_id), acct_ev
            if self.n % 200 == 0:
                yield "prices.mark", SYM, m.MarkPrice(**meta(self.n * 1000), symbol=SYM, mark_price="50000.0",
                                                      index_price="50000.0", last_price="50000.0", mid_price="",
                                                      funding_rate="0.0001", next_funding_ms=0)

    def _command(self) -> Any:
        i = self.n
        ts = meta(i * 1000)
        if i % 5 == 0 and self.live:  # cancel the oldest resting order: the book stays a few thousand deep
            oid = self.live.pop(0)
            return m.CancelRequest(**ts, order_id=oid, account_id=self._owner(oid), symbol=SYM)
        side = "BUY" if i % 2 else "SELL"
        price = 50_000 + (i * 7919) % 41 - 20
        self.live.append(i)
        if len(self.live) > 5000:
            self.live.pop(0)
        return m.NewOrder(**ts, order_id=i, account_id=self._owner(i), symbol=SYM, side=side, order_type="LIMIT",  # type: ignore[arg-type]
                          time_in_force="GTC", price=f"{price}.0", quantity="0.010", client_order_id=f"c{i}")

    def _owner(self, order_id: int) -> int:
        return 1 + order_id % self.accounts

    def _order(self, order_id: int, status: str, filled: str) -> m.OrderChanged:
        acct = self._owner(order_id)
        view = m.OrderView(order_id=order_id, client_order_id=f"c{order_id}", account_id=acct, symbol=SYM,
                           side="BUY", order_type="LIMIT", time_in_force="GTC", price="50000.0", quantity="0.010",
                           filled=filled, avg_price="50000.0", status=status, reduce_only=False,  # type: ignore[arg-type]
                           created_ms=self.n, updated_ms=self.n)
        return m.OrderChanged(**meta(self.n * 1000), account_id=acct, order=view)

    def _account_events(self, ev: Any) -> list[Any]:
        self.version += 1
        if isinstance(ev, m.OrderAccepted):
            return [self._order(ev.order_id, "NEW", "0"),
                    m.CommandResult(**meta(self.n), request_id=f"r{ev.order_id}", account_id=self._owner(ev.order_id),
                                    ok=True, code=0, order_id=ev.order_id)]
        if isinstance(ev, (m.OrderCancelled, m.OrderExpired)):
            return [self._order(ev.order_id, "CANCELED", "0")]
        if not isinstance(ev, m.Trade):
            return []
        out: list[Any] = []
        for acct, oid in ((ev.taker_account_id, ev.taker_order_id), (ev.maker_account_id, ev.maker_order_id)):
            out += [m.FillRecorded(**meta(self.n), account_id=acct, symbol=SYM, trade_id=ev.trade_id, order_id=oid,
                                   side="BUY", liquidity="TAKER", price=ev.price, quantity=ev.quantity, fee="0.01",
                                   fee_asset="USDT", realized_pnl="0"),
                    self._order(oid, "FILLED", ev.quantity),
                    m.BalanceChanged(**meta(self.n), account_id=acct, asset="USDT", available="1000", order_margin="0",
                                     position_margin="1", wallet="1000", version=self.version),
                    m.PositionChanged(**meta(self.n), account_id=acct, symbol=SYM, size="0.010", entry_price="50000.0",
                                      margin="1", leverage=10, realized_pnl="0", version=self.version)]
        return out


def create_topics(kafka: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka})
    wanted = [NewTopic(topics.physical(name, PREFIX), spec.partitions, 1, config=dict(spec.configs))
              for name, spec in topics.specs().items()]
    for future in admin.create_topics(wanted).values():
        future.result(30)


def write(kafka: str, stream: Iterator[tuple[str, str, Any]], count: int) -> float:
    """Produce `count` records of `stream`; returns the seconds it took."""
    names = topic_map(PREFIX)
    producer = Producer(producer_config(kafka, **{"linger.ms": 50, "batch.num.messages": 10_000,
                                                  "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000}))
    started = time.monotonic()
    for _ in range(count):
        logical, key, msg = next(stream)
        while True:
            try:
                producer.produce(names[logical], codec.encode(msg), key.encode())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0
    return time.monotonic() - started


def start_api(tmp: str, kafka: str, clickhouse: str, start: str, checkpoint_events: int) -> tuple[subprocess.Popen[bytes], str, float]:
    """(process, URL, seconds until /readyz answered 200) of a new API process."""
    port = free_port()
    env = {**api_env(tmp), "PERPLINE_KAFKA_BOOTSTRAP": kafka, "PERPLINE_CLICKHOUSE_URL": clickhouse,
           "PERPLINE_TOPIC_PREFIX": PREFIX, "PERPLINE_DATA_DIR": tmp, "PERPLINE_API_START": start,
           "PERPLINE_API_CHECKPOINT_EVENTS": str(checkpoint_events), "PERPLINE_LOG_LEVEL": "WARNING"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "perpline.api.main", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while True:
        assert proc.poll() is None, "API process exited"
        assert time.monotonic() - started < 900, "API not ready in 15 minutes"
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url, time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)


def api_env(tmp: str) -> dict[str, str]:
    """The environment with a bytecode cache of its own (PYTHONPYCACHEPREFIX), written even where the
    caller's environment says not to: the API processes start as the image's do, from compiled modules."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}


def compile_api(tmp: str) -> None:
    """Fill the bytecode cache once (the image compiles at build), so neither measured start compiles."""
    subprocess.run([sys.executable, "-c", "import perpline.api.main, perpline.api.app"], cwd=REPO_ROOT, env=api_env(tmp), check=True)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return round(int(found.group(1)) / 1024, 1) if found else 0.0


def cpu_s(pid: int) -> float:
    """CPU seconds the process used (user + system): what its start cost, whatever else shares the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def metric(url: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", httpx.get(url + "/metrics", timeout=10).text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def caught_up(url: str, timeout_s: float = 120.0) -> float:
    """Seconds until the API at `url` reports no consumer lag. The replica that wrote the checkpoint
    consumes the tail too; B starts only after it is done, so B's figures are its own start, not a
    start sharing this machine's two cores with another replica's catch-up (in production replicas
    run on machines of their own)."""
    started = time.monotonic()
    time.sleep(2 * LAG_INTERVAL_S)  # a fresh lag reading, taken after the tail was written
    while True:
        lags = re.findall(r"^perpline_consumer_lag_messages\{[^}]*\} (\S+)$", httpx.get(url + "/metrics", timeout=10).text,
                          re.MULTILINE)
        if lags and sum(float(v) for v in lags) == 0:
            return round(time.monotonic() - started, 2)
        assert time.monotonic() - started < timeout_s, "the replayer did not catch up with the tail"
        time.sleep(0.2)


def measure(tmp: str, kafka: str, clickhouse: str, start: str, checkpoint_events: int) -> tuple[dict[str, Any], subprocess.Popen[bytes], str]:
    proc, url, ready_s = start_api(tmp, kafka, clickhouse, start, checkpoint_events)
    cpu = cpu_s(proc.pid)
    time.sleep(1)  # let the allocator settle before reading RSS
    return {"ready_s": round(ready_s, 2), "cpu_s_to_ready": cpu, "readmodel_ready_s": round(metric(url, "perpline_api_readmodel_ready_seconds"), 2),
            "checkpoint_restored_s": round(metric(url, "perpline_api_checkpoint_restore_seconds"), 2),
            "rss_mb": rss_mb(proc.pid),
            "restored_from_events": int(metric(url, "perpline_api_checkpoint_loaded_events"))}, proc, url


def run(events: int, tail: int, accounts: int, every: int) -> dict[str, Any]:
    out: dict[str, Any] = {"events": events, "tail_after_checkpoint": tail, "accounts": accounts,
                           "checkpoint_every_events": every}
    with plain_stack("perpline-replica-bench-") as (tmp, _api, kafka, clickhouse):
        create_topics(kafka)
        stream = iter(History(accounts))
        out["write_history_s"] = round(write(kafka, stream, events), 1)
        compile_api(tmp)
        out["full_replay"], replayer, url = measure(tmp, kafka, clickhouse, "replay", every)
        try:
            started = time.monotonic()
            while metric(url, "perpline_api_checkpoints_written_total") < 1:
                assert time.monotonic() - started < 300, "no checkpoint written"
                time.sleep(0.1)
            out["checkpoint_written_after_s"] = round(time.monotonic() - started, 2)
            write(kafka, stream, tail)
            out["replayer_caught_up_s"] = caught_up(url)
            out["from_checkpoint"], fresh, _ = measure(tmp, kafka, clickhouse, "checkpoint", 0)
            fresh.terminate()
            fresh.wait(30)
        finally:
            replayer.terminate()
            replayer.wait(30)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replica")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=CHECKPOINT_EVENTS - 1000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--checkpoint-events", type=int, default=CHECKPOINT_EVENTS)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.events, args.tail, args.accounts, args.checkpoint_events), indent=2))


if __name__ == "__main__":
    main()
