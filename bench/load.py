"""Closed-loop load through the Binance-compatible API, as a new user would drive it.

    python -m bench.load [--pairs 32] [--seconds 30] [--qty 0.001]

Starts the plain stack (`perpline up --free-ports`, rate limits lifted), makes 2 x N funded users
with `perpline admin`, and runs N pairs of accounts trading with each other through signed
`POST /fapi/v1/order`: account A rests a GTC limit at the pair's price, account B takes it with an
IOC at the same price, then they swap roles (and every second round, sides), so positions stay
bounded. Each client waits for its answer before it sends the next request (closed loop).

Prints one JSON line: orders/s, trades/s, answer p50/p90/p99 for the resting and the taking order,
errors by code, the share of the answer time spent in each stage the API reports (X-Stage-Ms), and
then the books after the run settles: journals sum to zero, wallets equal the ledger, long equals
short, every reconciliation rule clean. Nothing here is a test: machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.api import pct, plain_stack, signed

USER_DEPOSIT = "USDT=1000000"
MAX_PAIRS = 256


def make_users(count: int, kafka: str, data_dir: str, deposit: str = USER_DEPOSIT) -> list[dict[str, Any]]:
    """`count` funded users from one `perpline admin create-user --count` process."""
    env = {**os.environ, "PERPLINE_KAFKA_BOOTSTRAP": kafka, "PERPLINE_DATA_DIR": data_dir}
    made = subprocess.run([sys.executable, "-m", "perpline.cli", "admin", "create-user", "--count", str(count),
                           "--deposit", deposit], env=env, capture_output=True, text=True, check=True, timeout=300)
    users: list[dict[str, Any]] = json.loads(made.stdout) if count > 1 else [json.loads(made.stdout)]
    return users


def mark_ticks(api: str) -> Decimal:
    """A price near the mark on the instrument's tick (the price band is around the mark)."""
    deadline = time.monotonic() + 30
    while True:
        found = httpx.get(f"{api}/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"}, timeout=10).json()
        mark = Decimal(str(found.get("markPrice") or "0"))
        if mark > 0:
            return mark.quantize(Decimal("0.1"))
        if time.monotonic() > deadline:
            raise SystemExit("no mark price within 30 s")
        time.sleep(0.5)


class Answer:
    """One HTTP answer: status, headers (lower-case names) and body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, body

    def json(self) -> Any:
        return json.loads(self.content)


class Connection:
    """A keep-alive HTTP/1.1 connection on asyncio streams: a load client lean enough that the machine's
    two cores go to the exchange, not to the client (httpx took ~40% of a core at 80 orders/s)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: str, api_key: str) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = body.encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nX-MBX-APIKEY: {api_key}\r\n"
                          f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(data)}\r\n\r\n"
                          .encode() + data)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        content = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Answer(int(head[0].split(" ", 2)[1]), headers, content)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Tally:
    def __init__(self) -> None:
        self.resting: list[float] = []
        self.taking: list[float] = []
        self.errors: Counter[str] = Counter()
        self.fills = 0
        self.stages: dict[str, float] = {}
        self.stage_count = 0

    def stage(self, header: str) -> None:
        if not header:
            return
        self.stage_count += 1
        for part in header.split(";"):
            name, _, ms = part.partition("=")
            self.stages[name] = self.stages.get(name, 0.0) + float(ms or 0)

    def answer(self, response: Answer, elapsed_ms: float, taking: bool) -> None:
        if response.status_code != 200:
            code = response.json().get("code", response.status_code) if response.content else response.status_code
            self.errors[str(code)] += 1
            return
        (self.taking if taking else self.resting).append(elapsed_ms)
        self.stage(response.headers.get("x-stage-ms", ""))
        if taking and response.json().get("status") == "FILLED":
            self.fills += 1


async def run_pair(api: str, a: dict[str, Any], b: dict[str, Any], price: Decimal, qty: str,
                   stop_at: float, tally: Tally) -> None:
    where = urlsplit(api)
    conn = Connection(where.hostname or "127.0.0.1", where.port or 80)
    try:
        await _trade_until(conn, a, b, price, qty, stop_at, tally)
    finally:
        conn.close()


async def _trade_until(conn: Connection, a: dict[str, Any], b: dict[str, Any], price: Decimal, qty: str,
                       stop_at: float, tally: Tally) -> None:
    k = 0
    while time.monotonic() < stop_at:
        maker, taker = (a, b) if k % 2 == 0 else (b, a)
        side = "BUY" if (k // 2) % 2 == 0 else "SELL"
        other = "SELL" if side == "BUY" else "BUY"
        for keys, order_side, tif, taking in ((maker, side, "GTC", False), (taker, other, "IOC", True)):
            body = signed(keys, {"symbol": "BTCUSDT", "side": order_side, "type": "LIMIT", "timeInForce": tif,
                                 "quantity": qty, "price": str(price)})
            t0 = time.perf_counter()
            response = await conn.post("/fapi/v1/order", body, keys["api_key"])
            tally.answer(response, (time.perf_counter() - t0) * 1000, taking)
        k += 1


async def drive(api: str, users: list[dict[str, Any]], price: Decimal, qty: str, seconds: float) -> dict[str, Any]:
    pairs = [(users[2 * i], users[2 * i + 1]) for i in range(len(users) // 2)]
    tally = Tally()
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(*(run_pair(api, a, b, price, qty, stop_at, tally) for a, b in pairs))
    elapsed = time.monotonic() - started
    answered = len(tally.resting) + len(tally.taking)
    total_stage = sum(tally.stages.values())
    return {"pairs": len(pairs), "seconds": round(elapsed, 1), "orders_per_s": round(answered / elapsed, 1),
            "trades_per_s": round(tally.fills / elapsed, 1), "errors": dict(tally.errors),
            **{f"resting_p{q}_ms": pct(tally.resting, q / 100) for q in (50, 90, 99)},
            **{f"taking_p{q}_ms": pct(tally.taking, q / 100) for q in (50, 90, 99)},
            "stage_share": {k: round(v / total_stage, 3) for k, v in tally.stages.items()} if total_stage else {},
            "stage_mean_ms": {k: round(v / tally.stage_count, 2) for k, v in tally.stages.items()}
            if tally.stage_count else {}}


def topic_offsets(kafka: str) -> dict[str, int]:
    """Offsets written so far on every topic (our topics and Quix's changelogs): records plus
    transaction markers, each of which the broker stores and serves."""
    from perpline.topics_tool import describe  # noqa: PLC0415

    return {t["topic"]: sum(p["high"] for p in t["partitions"]) for t in describe(kafka, include_all=True)}


def offsets_per_order(before: dict[str, int], after: dict[str, int], report: dict[str, Any]) -> dict[str, float]:
    """What one answered order cost the broker, per topic: offsets written during the run / orders."""
    orders = report["orders_per_s"] * report["seconds"]
    if not orders:
        return {}
    grown = {t: after[t] - before.get(t, 0) for t in after}
    per = {t: round(n / orders, 2) for t, n in sorted(grown.items(), key=lambda kv: -kv[1]) if n}
    per["total"] = round(sum(grown.values()) / orders, 2)
    return per


SETTLING_PASSES = 6  # reconciler passes after the quiet point: a break is confirmed after 3 drains, then repaired


def _repairs_settled(client: Any, deadline: float) -> float:
    """Wait for SETTLING_PASSES reconciler passes begun after now, then until no automatic repair is
    between applied and confirmed (a withdrawal decided after the API stopped waiting has its wallet
    line sent by the reconciler's repair, for instance); returns the seconds waited. Repairs proposed
    to an operator stay open and are not waited for."""
    started, since_ms = time.monotonic(), int(time.time() * 1000)
    while time.monotonic() < deadline:
        passes = int(client.query("SELECT count() FROM recon_runs WHERE started_ms >= {s:Int64}",
                                  parameters={"s": since_ms}).result_rows[0][0])
        busy = int(client.query("SELECT count() FROM recon_repairs FINAL WHERE status IN ('applied', 'open')")
                   .result_rows[0][0])
        if passes >= SETTLING_PASSES and not busy:
            break
        time.sleep(1.0)
    return round(time.monotonic() - started, 1)


def check_books(reader_url: str, data_dir: str, quiet_s: float = 3.0, timeout_s: float = 120.0) -> dict[str, Any]:
    """After the sink has caught up (ledger rows stable for `quiet_s`) and the reconciler's automatic
    repairs in progress have been confirmed (`repairs_waited_s`; the repairs made are reported by rule):
    every reconciliation rule on a full pass, twice (the eventual rules count only when a second pass
    finds the same break). As the reconciler, with the admin's password from the data dir (the rules set
    query settings, which the read-only user may not)."""
    from perpline.ch.client import get_client  # noqa: PLC0415 (the bench's own import, after the stack is up)
    from perpline.ch.users import ADMIN_USER, USERS_DIR_NAME, read_password, with_credentials  # noqa: PLC0415
    from perpline.recon.rules import load_rules, run_rule  # noqa: PLC0415

    admin_password = read_password(Path(data_dir) / USERS_DIR_NAME, ADMIN_USER)
    client = get_client(with_credentials(reader_url, ADMIN_USER, admin_password))
    last, stable_since, deadline = -1, time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = int(client.query("SELECT count() FROM ledger_postings").result_rows[0][0])
        if rows != last:
            last, stable_since = rows, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_s:
            break
        time.sleep(0.5)
    repairs_waited_s = _repairs_settled(client, time.monotonic() + timeout_s)
    passes = []
    for _ in range(2):
        now_ms = int(time.time() * 1000) + 60_000  # past every grace period
        passes.append({rule.name: len(run_rule(client, rule, 0, now_ms)) for rule in load_rules()})
        time.sleep(1.0)
    breaks = {name: n for name, n in passes[-1].items() if n and passes[0][name]}
    repairs = dict(client.query("SELECT rule, count() FROM recon_repairs FINAL GROUP BY rule").result_rows)
    return {"ledger_rows": last, "repairs_by_rule": repairs, "repairs_waited_s": repairs_waited_s,
            "journals_balanced": passes[-1].get("journal_balanced", 0) == 0,
            "wallets_equal_ledger": not breaks.get("ledger_vs_state"), "long_equals_short": not breaks.get("open_interest"),
            "recon_breaks": breaks}


def cpu_during(data_dir: str, seconds: float) -> dict[str, float]:
    """Each stack component's CPU in the middle of the run (the first and last tenth left out), in percent
    of one core: what the two cores are spent on under this load."""
    from bench.chaos import _supervisor_pid  # noqa: PLC0415
    from bench.idle import measure  # noqa: PLC0415

    time.sleep(seconds / 10)
    return measure(_supervisor_pid(data_dir), seconds * 0.8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--qty", default="0.003", help="BTC per order")
    args = parser.parse_args()
    assert 1 <= args.pairs <= MAX_PAIRS, f"--pairs must be 1..{MAX_PAIRS}"
    with plain_stack("perpline-load-") as (tmp, api, kafka, clickhouse):
        made_at = time.monotonic()
        users = make_users(2 * args.pairs, kafka, tmp)
        users_s = time.monotonic() - made_at
        before = topic_offsets(kafka)
        cpu: dict[str, float] = {}
        sampler = threading.Thread(target=lambda: cpu.update(cpu_during(tmp, args.seconds)), daemon=True)
        sampler.start()
        client_cpu = time.process_time()
        report = asyncio.run(drive(api, users, mark_ticks(api), args.qty, args.seconds))
        sampler.join()
        cpu["bench-client"] = round(100 * (time.process_time() - client_cpu) / report["seconds"], 1)
        report["cpu_pct_of_one_core"] = cpu
        report["offsets_per_order"] = offsets_per_order(before, topic_offsets(kafka), report)
        report["users_made_s"] = round(users_s, 1)
        report["books"] = check_books(clickhouse, tmp)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
