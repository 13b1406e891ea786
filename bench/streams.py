"""Stream fan-out benchmark: many subscribers to one symbol's depth and trades on one API process,
while closed-loop traders trade through REST.

    python -m bench.streams [--subscribers 1000] [--pairs 4] [--seconds 20] [--baseline-seconds 10]

Starts the plain stack (`perpline up --free-ports`, rate limits lifted), makes 2 x pairs funded
users, and runs bench.load's trading pairs first alone (the API's CPU without subscribers), then
with `--subscribers` websocket clients in a second process, each subscribed to `btcusdt@depth@100ms`
and `btcusdt@trade` on /fstream/public/ws/<n>. The clients are a lean websocket reader on asyncio
protocols (no per-frame JSON decoding), so the machine's cores go to the server.

Prints one JSON line:
  trade_delay_p50/p99_ms   receive time - the trade frame's T, the matcher's trade time: matcher ->
                           settlement -> read model -> hub tick -> socket -> client
  depth_delay_p50/p99_ms   receive time - the depth diff's E (when the hub built it): the fan-out alone
  frames_per_s             frames delivered to all subscribers, per second
  dropped                  subscribers the server disconnected; depth_gaps: diffs whose pu was not
                           the previous u (a lost frame)
  api_cpu_pct_*            the API process's CPU (% of one core, from /proc/<pid>/stat) without and
                           with the subscribers, and the difference per subscriber; client_cpu_pct:
                           the subscribers' process; load_average_1m: how busy the machine was
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
import time
from decimal import Decimal
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.api import pct, plain_stack
from bench.load import Tally, make_users, mark_ticks, run_pair

STREAMS = ("btcusdt@depth@100ms", "btcusdt@trade")
MAX_SUBSCRIBERS = 5000
CONNECT_BATCH = 50  # handshakes in flight at once
HEAD = re.compile(rb'\{"e": ?"(trade|depthUpdate)", ?"E": ?(\d+), ?"T": ?(\d+)')
DEPTH_IDS = re.compile(rb'"U": ?(\d+), ?"u": ?(\d+), ?"pu": ?(\d+)')


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
        self.depth_ms: list[int] = []
        self.since = time.monotonic()


class Subscriber(asyncio.Protocol):
    """One websocket client: the upgrade, one SUBSCRIBE, then frames counted and timed per read."""

    def __init__(self, host: str, path: str, stats: Stats, ready: asyncio.Future[None]) -> None:
        self.host, self.path, self.stats, self.ready = host, path, stats, ready
        self.buf = b""
        self.open = False
        self.last_u = -1
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        .encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before subscribing"))

    def data_received(self, data: bytes) -> None:
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
            stats.trade_ms.append(now_ms - int(found[3]))
            return
        stats.depth_ms.append(now_ms - int(found[2]))
        ids = DEPTH_IDS.search(payload)
        if ids is not None:
            if self.last_u >= 0 and int(ids[3]) != self.last_u:
                stats.gaps += 1
            self.last_u = int(ids[2])


async def _subscribe_all(api: str, count: int, pipe: Pipe) -> None:
    where = urlsplit(api)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    loop = asyncio.get_running_loop()
    stats = Stats()

    async def one(n: int) -> None:
        ready: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(lambda: Subscriber(where.netloc, f"/fstream/public/ws/{n % 50}", stats, ready),
                                     host, port)
        await asyncio.wait_for(ready, 30)

    for first in range(0, count, CONNECT_BATCH):
        await asyncio.gather(*(one(n) for n in range(first, min(count, first + CONNECT_BATCH))))
    pipe.send("subscribed")
    await loop.run_in_executor(None, pipe.recv)  # "go"
    stats.reset()
    cpu0 = time.process_time()
    await loop.run_in_executor(None, pipe.recv)  # "stop"
    elapsed = time.monotonic() - stats.since
    client_cpu_pct = round(100 * (time.process_time() - cpu0) / elapsed, 1)
    pipe.send({"subscribers": count, "trade_delay_p50_ms": pct(stats.trade_ms, 0.5),  # type: ignore[arg-type]
               "trade_delay_p99_ms": pct(stats.trade_ms, 0.99),  # type: ignore[arg-type]
               "trade_delay_max_ms": max(stats.trade_ms, default=0),
               "depth_delay_p50_ms": pct(stats.depth_ms, 0.5), "depth_delay_p99_ms": pct(stats.depth_ms, 0.99),  # type: ignore[arg-type]
               "frames_per_s": round(stats.frames / elapsed, 1), "trade_frames": len(stats.trade_ms),
               "depth_frames": len(stats.depth_ms), "dropped": stats.closed, "depth_gaps": stats.gaps,
               "client_cpu_pct": client_cpu_pct, "load_average_1m": os.getloadavg()[0]})


def subscribers_process(api: str, count: int, pipe: Pipe) -> None:
    asyncio.run(_subscribe_all(api, count, pipe))


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    args = parser.parse_args()
    assert 1 <= args.subscribers <= MAX_SUBSCRIBERS, f"--subscribers must be 1..{MAX_SUBSCRIBERS}"
    os.environ["PERPLINE_FSTREAM_CONNECTIONS_PER_IP"] = str(MAX_SUBSCRIBERS)  # every client is on 127.0.0.1
    with plain_stack("perpline-streams-") as (tmp, api, kafka, _):
        users = make_users(2 * args.pairs, kafka, tmp)
        price, pid = mark_ticks(api), api_pid(api)
        base_cpu, base = cpu_while_trading(api, pid, users, price, args.baseline_seconds)
        parent, child = multiprocessing.get_context("spawn").Pipe()
        proc = multiprocessing.get_context("spawn").Process(target=subscribers_process,
                                                            args=(api, args.subscribers, child))
        proc.start()
        assert parent.poll(300) and parent.recv() == "subscribed", "subscribers did not connect"
        parent.send("go")
        cpu, tally = cpu_while_trading(api, pid, users, price, args.seconds)
        parent.send("stop")
        report = parent.recv()
        proc.join(30)
        report.update({
            "pairs": args.pairs, "seconds": args.seconds,
            "trades_per_s": round(tally.fills / args.seconds, 1),
            "trades_per_s_without_subscribers": round(base.fills / args.baseline_seconds, 1),
            "order_p99_ms": pct(tally.taking + tally.resting, 0.99),
            "order_p99_ms_without_subscribers": pct(base.taking + base.resting, 0.99),
            "api_cpu_pct_without_subscribers": round(base_cpu, 1), "api_cpu_pct_with_subscribers": round(cpu, 1),
            "api_cpu_pct_per_subscriber": round((cpu - base_cpu) / args.subscribers, 4),
            "dropped_by_server": dropped_by_server(api), "errors": dict(tally.errors)})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
