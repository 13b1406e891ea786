"""Stream fan-out benchmark: 1, 100 and 1,000 subscribers to one symbol's depth and trades on one
API process, while closed-loop traders trade through REST.

    python -m bench.streams [--subscribers 1,100,1000] [--pairs 4] [--seconds 20] [--baseline-seconds 10]

Starts the plain stack (`perpline up --free-ports`, rate limits lifted), makes 2 x pairs funded
users, and runs bench.load's trading pairs first alone (the API's CPU without subscribers), then once
per subscriber count (ascending; a second process adds websocket clients up to the count), each client
subscribed to `btcusdt@depth@100ms` and `btcusdt@trade` on /fstream/public/ws/<n>. The clients are a
lean websocket reader on asyncio protocols (no per-frame JSON decoding), so the cores go to the server.

Prints one JSON line with one entry per subscriber count:
  trade_delay_p50/p99_ms   receive time - the trade frame's T. T is the time of the REQUEST that made the
                           trade (the matcher stamps its events with its input's time), so this includes
                           API -> accounts -> matcher as well as the fan-out
  from_matcher_p50/p99_ms  receive time - the matcher's record of the trade (its matcher.events record
                           timestamp, read by a consumer here): matcher -> read model -> hub -> client
  first_subscriber_*       the same for the first client alone (the one connected before the others)
  stages_ms                p50/p99 of the API's own stage histograms over the phase, each from T
                           (perpline.api.streamdelay): matcher, applied (read model), built (hub tick),
                           written (the tick's socket writes ended); received: the clients'
  tick_ms                  the hub's time per tick building and writing frames (p50/p99)
  depth_delay_p50/p99_ms   receive time - the depth diff's E (when the hub built it): the fan-out alone
  frames_per_s, dropped, depth_gaps (diffs whose pu was not the previous u: a lost frame)
  api_cpu_pct_*            the API process's CPU (% of one core) without and with subscribers;
  client_cpu_pct           the subscribers' process; load_average_1m: how busy the machine was
Nothing here is a test: machines are shared and noisy (the delay includes the client process's own
scheduling on the same machine).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import re
import threading
import time
import uuid
from decimal import Decimal
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from confluent_kafka import OFFSET_END, TIMESTAMP_CREATE_TIME, Consumer, TopicPartition

from bench.api import pct, plain_stack
from bench.load import Tally, make_users, mark_ticks, run_pair
from perpline.contracts import codec, topics
from perpline.contracts import messages as m
from perpline.contracts.instruments import load_catalog

STREAMS = ("btcusdt@depth@100ms", "btcusdt@trade")
MAX_SUBSCRIBERS = 5000
CONNECT_BATCH = 50  # handshakes in flight at once
HEAD = re.compile(rb'\{"e": ?"(trade|depthUpdate)", ?"E": ?(\d+), ?"T": ?(\d+)')
DEPTH_IDS = re.compile(rb'"U": ?(\d+), ?"u": ?(\d+), ?"pu": ?(\d+)')
TRADE_ID = re.compile(rb'"t": ?(\d+)')
DELAY_METRIC = "perpline_fstream_trade_delay_seconds"
TICK_METRIC = "perpline_fstream_tick_seconds"
BUCKET = re.compile(r'^(perpline_fstream_\w+)_bucket\{([^}]*)\} (\S+)$', re.M)
LABEL = re.compile(r'(\w+)="([^"]*)"')


def masked_text(payload: bytes) -> bytes:
    """A client text frame (clients must mask, RFC 6455 5.3); payloads here are short."""
    assert len(payload) < 126
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + key + body


class Stats:
    """What all subscribers saw since `reset`."""

    def __init__(self) -> None:
        self.reset()
        self.closed = 0

    def reset(self) -> None:
        self.frames, self.gaps = 0, 0
        self.trade_ms: list[int] = []
        self.first_trade_ms: list[int] = []  # the first client's alone
        self.arrivals: list[tuple[int, int]] = []  # (trade id, receive ms), every client
        self.first_arrivals: list[tuple[int, int]] = []
        self.depth_ms: list[int] = []
        self.since = time.monotonic()


class Subscriber(asyncio.Protocol):
    """One websocket client: the upgrade, one SUBSCRIBE, then frames counted and timed per read."""

    def __init__(self, host: str, path: str, stats: Stats, ready: asyncio.Future[None], first: bool) -> None:
        self.host, self.path, self.stats, self.ready, self.first = host, path, stats, ready, first
        self.buf = b""
        self.open = False
        self.reads: list[tuple[int, bytes]] = []  # (receive ms, data) once subscribed, parsed by `drain`
        self.last_u = -1
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] (uvloop's transports do not subclass asyncio's)
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        .encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before subscribing"))

    def data_received(self, data: bytes) -> None:
        """Once subscribed, only the time and the bytes: parsing waits for `drain`, so a read costs the
        client little and the next socket's frames are timed soon after they arrived."""
        if self.ready.done():
            self.reads.append((int(time.time() * 1000), data))
            return
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(self.buf[:200].decode("latin-1")))
                return
            self.open, self.buf = True, self.buf[end + 4:]
            request = {"method": "SUBSCRIBE", "params": list(STREAMS), "id": 1}
            assert self.transport is not None
            self.transport.write(masked_text(json.dumps(request, separators=(",", ":")).encode()))
        self._frames(int(time.time() * 1000))

    def drain(self) -> None:
        """Parse what was read since the last drain, each read with its own receive time."""
        reads, self.reads = self.reads, []
        for now_ms, data in reads:
            self.buf += data
            self._frames(now_ms)

    def _frames(self, now_ms: int) -> None:
        buf, i, stats = self.buf, 0, self.stats
        while len(buf) - i >= 2:
            size, start = buf[i + 1] & 0x7F, i + 2
            if size == 126:
                size, start = int.from_bytes(buf[i + 2:i + 4], "big"), i + 4
            elif size == 127:
                size, start = int.from_bytes(buf[i + 2:i + 10], "big"), i + 10
            if len(buf) < start + size:
                break
            if buf[i] & 0x0F == 1:
                self._text(buf[start:start + size], now_ms, stats)
            i = start + size
        self.buf = buf[i:]

    def _text(self, payload: bytes, now_ms: int, stats: Stats) -> None:
        found = HEAD.match(payload)
        if found is None:  # the SUBSCRIBE reply
            if not self.ready.done():
                self.ready.set_result(None)
            return
        stats.frames += 1
        if found[1] == b"trade":
            delay_ms, trade_id = now_ms - int(found[3]), TRADE_ID.search(payload)
            stats.trade_ms.append(delay_ms)
            arrival = (int(trade_id[1]) if trade_id else -1, now_ms)
            stats.arrivals.append(arrival)
            if self.first:
                stats.first_trade_ms.append(delay_ms)
                stats.first_arrivals.append(arrival)
            return
        stats.depth_ms.append(now_ms - int(found[2]))
        ids = DEPTH_IDS.search(payload)
        if ids is not None:
            if self.last_u >= 0 and int(ids[3]) != self.last_u:
                stats.gaps += 1
            self.last_u = int(ids[2])


async def _subscribe_all(api: str, pipe: Pipe) -> None:
    """Commands from the bench: ("connect", total) adds clients up to total, ("go",) starts counting,
    ("stop",) sends what was seen since, ("exit",) ends."""
    where = urlsplit(api)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    loop = asyncio.get_running_loop()
    stats = Stats()
    connected, cpu0 = 0, 0.0
    clients: list[Subscriber] = []

    async def one(n: int) -> None:
        ready: asyncio.Future[None] = loop.create_future()
        path = f"/fstream/public/ws/{n % 50}"
        _, client = await loop.create_connection(lambda: Subscriber(where.netloc, path, stats, ready, n == 0),
                                                 host, port)
        clients.append(client)
        await asyncio.wait_for(ready, 30)

    while True:
        cmd = await loop.run_in_executor(None, pipe.recv)
        if cmd[0] == "connect":
            for first in range(connected, cmd[1], CONNECT_BATCH):
                await asyncio.gather(*(one(n) for n in range(first, min(cmd[1], first + CONNECT_BATCH))))
            connected = cmd[1]
            pipe.send("subscribed")
        elif cmd[0] == "go":
            for client in clients:
                client.drain()  # what came before counts for nothing (the depth chain is kept)
            stats.reset()
            cpu0 = time.process_time()
        elif cmd[0] == "stop":
            cpu_s = time.process_time() - cpu0  # the reads alone: parsing them is the bench's own work
            elapsed = time.monotonic() - stats.since
            for client in clients:
                client.drain()
            pipe.send(_client_report(stats, connected, cpu_s, elapsed))
        else:
            return


def _client_report(stats: Stats, count: int, cpu_s: float, elapsed: float) -> dict[str, Any]:
    return {"subscribers": count, "trade_delay_p50_ms": pct(stats.trade_ms, 0.5),  # type: ignore[arg-type]
            "trade_delay_p99_ms": pct(stats.trade_ms, 0.99),  # type: ignore[arg-type]
            "trade_delay_max_ms": max(stats.trade_ms, default=0),
            "first_subscriber_trade_delay_p50_ms": pct(stats.first_trade_ms, 0.5),  # type: ignore[arg-type]
            "first_subscriber_trade_delay_p99_ms": pct(stats.first_trade_ms, 0.99),  # type: ignore[arg-type]
            "depth_delay_p50_ms": pct(stats.depth_ms, 0.5), "depth_delay_p99_ms": pct(stats.depth_ms, 0.99),  # type: ignore[arg-type]
            "frames_per_s": round(stats.frames / elapsed, 1), "trade_frames": len(stats.trade_ms),
            "depth_frames": len(stats.depth_ms), "dropped": stats.closed, "depth_gaps": stats.gaps,
            "client_cpu_pct": round(100 * cpu_s / elapsed, 1),
            "load_average_1m": os.getloadavg()[0],
            "arrivals": stats.arrivals, "first_arrivals": stats.first_arrivals}


def subscribers_process(api: str, pipe: Pipe) -> None:
    import uvloop  # noqa: PLC0415 (the subscribers' process only)
    uvloop.run(_subscribe_all(api, pipe))


class MatcherTimes:
    """trade id -> the matcher.events record timestamp (the matcher's produce time) of one symbol's
    trades, read by a consumer of its own from the end of the topic."""

    def __init__(self, kafka: str, binance_symbol: str) -> None:
        self.kafka = kafka
        self.symbols = {i.symbol for i in load_catalog().instruments.values() if i.binance_symbol == binance_symbol}
        self.produced_ms: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="matcher-times", daemon=True)

    def _run(self) -> None:
        name = topics.physical("matcher.events")
        consumer = Consumer({"bootstrap.servers": self.kafka, "group.id": f"bench-streams-{uuid.uuid4().hex}",
                             "enable.auto.commit": False, "isolation.level": "read_committed",
                             "fetch.wait.max.ms": 5})
        parts = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, OFFSET_END) for p in parts])
        try:
            while not self.stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None or msg.error() is not None:
                    continue
                ev = codec.decode("matcher.events", msg.value())
                kind, at_ms = msg.timestamp()
                if isinstance(ev, m.Trade) and ev.symbol in self.symbols and kind == TIMESTAMP_CREATE_TIME:
                    self.produced_ms[ev.trade_id] = at_ms
        finally:
            consumer.close()

    def delays(self, arrivals: list[tuple[int, int]]) -> list[int]:
        """Receive ms - the matcher's produce ms, for the arrivals whose trade this consumer saw."""
        known = self.produced_ms
        return [at_ms - known[t] for t, at_ms in arrivals if t in known]


def scrape(api: str) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """The stream hub's histograms from the API's /metrics: (metric, label value) -> [(le, count)]."""
    text = httpx.get(api + "/metrics", timeout=10).text
    found: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for metric, labels, count in BUCKET.findall(text):
        named = dict(LABEL.findall(labels))
        le = named.pop("le")
        label = next(iter(named.values()), "")
        found.setdefault((metric, label), []).append((float(le), float(count)))
    return found


def quantile_ms(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> float:
    """The q-quantile of what a histogram counted between two scrapes, interpolated within its bucket."""
    counts = [(le, n - dict(before).get(le, 0.0)) for le, n in after]
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return 0.0
    rank, low, below = q * total, 0.0, 0.0
    for le, cumulative in counts:
        if cumulative >= rank:
            if le == float("inf"):
                return round(low * 1000, 1)
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return round((low + (le - low) * share) * 1000, 1)
        low, below = le, cumulative
    return round(low * 1000, 1)


def histogram_report(before: dict[tuple[str, str], Any], after: dict[tuple[str, str], Any], metric: str,
                     labels: tuple[str, ...]) -> dict[str, list[float]]:
    return {label: [quantile_ms(before.get((metric, label), []), after.get((metric, label), []), q)
                    for q in (0.5, 0.99)] for label in labels}


def api_pid(api: str) -> int:
    """The pid of the stack's API process (`perpline.api.main ... --port <port>`)."""
    port = str(urlsplit(api).port)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"perpline.api.main" in args and port.encode() in args:
                return int(entry.name)
    raise SystemExit("API process not found")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def trade_for(api: str, users: list[dict[str, Any]], price: Decimal, seconds: float) -> Tally:
    tally = Tally()
    stop_at = time.monotonic() + seconds
    pairs = [(users[2 * i], users[2 * i + 1]) for i in range(len(users) // 2)]
    await asyncio.gather(*(run_pair(api, a, b, price, "0.003", stop_at, tally) for a, b in pairs))
    return tally


def cpu_while_trading(api: str, pid: int, users: list[dict[str, Any]], price: Decimal,
                      seconds: float) -> tuple[float, Tally]:
    """(the API's CPU in % of one core, the trading tally) over `seconds` of trading."""
    cpu0, t0 = cpu_s(pid), time.monotonic()
    tally = asyncio.run(trade_for(api, users, price, seconds))
    return 100 * (cpu_s(pid) - cpu0) / (time.monotonic() - t0), tally


def dropped_by_server(api: str) -> dict[str, float]:
    """perpline_fstream_dropped_total by reason, from the API's /metrics."""
    text = httpx.get(api + "/metrics", timeout=10).text
    found = re.findall(r'perpline_fstream_dropped_total\{reason="(\w+)"\} (\S+)', text)
    return {reason: float(n) for reason, n in found if float(n)}


def run_phase(api: str, pid: int, users: list[dict[str, Any]], price: Decimal, seconds: float, count: int,
              pipe: Pipe, matcher: MatcherTimes, base_cpu: float) -> dict[str, Any]:
    """Subscribers up to `count`, then `seconds` of trading measured on both sides."""
    pipe.send(("connect", count))
    assert pipe.poll(300) and pipe.recv() == "subscribed", "subscribers did not connect"
    before = scrape(api)
    pipe.send(("go",))
    cpu, tally = cpu_while_trading(api, pid, users, price, seconds)
    time.sleep(0.5)  # the last frames arrive
    pipe.send(("stop",))
    report = pipe.recv()
    after = scrape(api)
    arrivals, first = report.pop("arrivals"), report.pop("first_arrivals")
    from_matcher, first_from_matcher = matcher.delays(arrivals), matcher.delays(first)
    stages = histogram_report(before, after, DELAY_METRIC, ("matcher", "applied", "built", "written"))
    stages["received"] = [report["trade_delay_p50_ms"], report["trade_delay_p99_ms"]]
    report.update({
        "from_matcher_p50_ms": pct(from_matcher, 0.5), "from_matcher_p99_ms": pct(from_matcher, 0.99),  # type: ignore[arg-type]
        "first_subscriber_from_matcher_p50_ms": pct(first_from_matcher, 0.5),  # type: ignore[arg-type]
        "first_subscriber_from_matcher_p99_ms": pct(first_from_matcher, 0.99),  # type: ignore[arg-type]
        "matched_arrivals": len(from_matcher), "stages_ms": stages,
        "tick_ms": histogram_report(before, after, TICK_METRIC, ("build", "write")),
        "trades_per_s": round(tally.fills / seconds, 1), "order_p99_ms": pct(tally.taking + tally.resting, 0.99),
        "api_cpu_pct": round(cpu, 1), "api_cpu_pct_per_subscriber": round((cpu - base_cpu) / count, 4),
        "errors": dict(tally.errors)})
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", default="1,100,1000", help="ascending counts, one phase each")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    args = parser.parse_args()
    counts = [int(n) for n in args.subscribers.split(",")]
    assert counts == sorted(counts) and 1 <= counts[0] and counts[-1] <= MAX_SUBSCRIBERS, \
        f"--subscribers: ascending counts in 1..{MAX_SUBSCRIBERS}"
    os.environ["PERPLINE_FSTREAM_CONNECTIONS_PER_IP"] = str(MAX_SUBSCRIBERS)  # every client is on 127.0.0.1
    with plain_stack("perpline-streams-") as (tmp, api, kafka, _):
        users = make_users(2 * args.pairs, kafka, tmp)
        price, pid = mark_ticks(api), api_pid(api)
        matcher = MatcherTimes(kafka, "BTCUSDT")
        matcher.thread.start()
        base_cpu, base = cpu_while_trading(api, pid, users, price, args.baseline_seconds)
        parent, child = multiprocessing.get_context("spawn").Pipe()
        proc = multiprocessing.get_context("spawn").Process(target=subscribers_process, args=(api, child))
        proc.start()
        phases = [run_phase(api, pid, users, price, args.seconds, n, parent, matcher, base_cpu) for n in counts]
        parent.send(("exit",))
        proc.join(30)
        matcher.stop.set()
        report = {
            "pairs": args.pairs, "seconds": args.seconds,
            "trades_per_s_without_subscribers": round(base.fills / args.baseline_seconds, 1),
            "order_p99_ms_without_subscribers": pct(base.taking + base.resting, 0.99),
            "api_cpu_pct_without_subscribers": round(base_cpu, 1), "phases": phases,
            "dropped_by_server": dropped_by_server(api), "load_average_1m": os.getloadavg()[0]}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
