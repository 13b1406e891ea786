"""API benchmark: signed order placement and cancels over HTTP at a bounded rate, on a local stack.

    python -m bench.api [--rate 40] [--seconds 20] [--workers 8]

Starts `perpline up` (free ports, temporary data dir), makes a user with `perpline admin`, then for
`--seconds` places resting limit orders through POST /fapi/v1/order at about `--rate` per second
(each one cancelled right after), and reads GET /fapi/v1/openOrders at the same pace. Prints one
JSON object: sustained orders/s, order-ack and cancel latency (p50/p99, end to end: HTTP -> API ->
accounts -> matcher -> settled read models -> response), read latency, and the share of the
order-ack time spent waiting for the accounts decision vs for matching and settlement (from the
API's X-Stage-Ms header). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx

from perpline import REPO_ROOT

BENCH_LIMITS = {"PERPLINE_RATE_LIMIT_IP": "1000000", "PERPLINE_RATE_LIMIT_KEY": "1000000",
                "PERPLINE_RATE_LIMIT_ORDERS": "1000000"}  # measure the pipeline, not the limiter


def start_stack(data_dir: str) -> tuple[subprocess.Popen[str], str, str, str]:
    """(process, API URL, broker address, ClickHouse URL of the read-only user) of a plain stack on free ports."""
    proc = subprocess.Popen([sys.executable, "-m", "perpline.cli", "up", "--free-ports", "--data-dir", data_dir],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **BENCH_LIMITS})
    assert proc.stdout is not None
    api = kafka = clickhouse = ""
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        api = api or (re.search(r"perpline ready: api=(\S+)", line) or [None, ""])[1]  # type: ignore[index]
        kafka = kafka or (re.search(r"kafka=(\S+)", line) or [None, ""])[1]  # type: ignore[index]
        clickhouse = clickhouse or (re.search(r"PERPLINE_CLICKHOUSE_URL=(\S+)", line) or [None, ""])[1]  # type: ignore[index]
        if api and kafka and "ready in" in line:
            break
        assert time.monotonic() < deadline, "stack not ready"
    # keep reading: a full pipe would block the supervisor's log relay, and with it every component
    threading.Thread(target=_drain, args=(proc.stdout, os.environ.get("PERPLINE_BENCH_STACK_LOG")), daemon=True).start()
    return proc, api, kafka, clickhouse


def _drain(stream: Any, log_path: str | None) -> None:
    """Read the stack's output to its end; into PERPLINE_BENCH_STACK_LOG if set (to see what a long run did)."""
    if not log_path:
        stream.read()
        return
    with open(log_path, "a", encoding="utf-8") as log:
        for line in stream:
            log.write(line)


@contextlib.contextmanager
def plain_stack(prefix: str) -> Iterator[tuple[str, str, str, str]]:
    """(data dir, API URL, broker address, reader's ClickHouse URL) of a plain stack, stopped on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        proc, api, kafka, clickhouse = start_stack(tmp)
        try:
            yield tmp, api, kafka, clickhouse
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def signed(keys: dict[str, Any], params: dict[str, Any]) -> str:
    text = urlencode({**params, "timestamp": int(time.time() * 1000)})
    return text + "&signature=" + hmac.new(keys["api_secret"].encode(), text.encode(), hashlib.sha256).hexdigest()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else 0.0


async def drive(api: str, keys: dict[str, Any], rate: float, seconds: float, workers: int) -> dict[str, Any]:
    headers = {"X-MBX-APIKEY": keys["api_key"], "Content-Type": "application/x-www-form-urlencoded"}
    acks: list[float] = []
    cancels: list[float] = []
    reads: list[float] = []
    stages: dict[str, list[float]] = {"accounts": [], "settled": []}
    errors = 0
    interval = workers / rate
    stop_at = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as client:
        async def worker(n: int) -> None:
            nonlocal errors
            k = 0
            await asyncio.sleep(n * interval / workers)
            while time.monotonic() < stop_at:
                tick = time.monotonic()
                k += 1
                body = signed(keys, {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                     "quantity": "0.010", "price": f"{48500 + n}.0", "newClientOrderId": f"b{n}-{k}"})
                t0 = time.perf_counter()
                placed = await client.post("/fapi/v1/order", content=body)
                acks.append((time.perf_counter() - t0) * 1000)
                if placed.status_code != 200:
                    errors += 1
                    continue
                for part in placed.headers.get("X-Stage-Ms", "").split(";"):
                    name, _, ms = part.partition("=")
                    if name in stages:
                        stages[name].append(float(ms))
                t0 = time.perf_counter()
                gone = await client.delete("/fapi/v1/order?" + signed(keys, {"symbol": "BTCUSDT",
                                                                             "orderId": placed.json()["orderId"]}))
                cancels.append((time.perf_counter() - t0) * 1000)
                errors += gone.status_code != 200
                t0 = time.perf_counter()
                listed = await client.get("/fapi/v1/openOrders?" + signed(keys, {"symbol": "BTCUSDT"}))
                reads.append((time.perf_counter() - t0) * 1000)
                errors += listed.status_code != 200
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - tick)))

        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(workers)))
        elapsed = time.monotonic() - started
    total = sum(stages["accounts"]) + sum(stages["settled"])
    return {"orders": len(acks), "seconds": round(elapsed, 1), "orders_per_s": round(len(acks) / elapsed, 1),
            "target_rate": rate, "errors": errors,
            "order_ack_p50_ms": pct(acks, 0.5), "order_ack_p99_ms": pct(acks, 0.99),
            "cancel_p50_ms": pct(cancels, 0.5), "cancel_p99_ms": pct(cancels, 0.99),
            "read_p50_ms": pct(reads, 0.5), "read_p99_ms": pct(reads, 0.99),
            "share_accounts_decision": round(sum(stages["accounts"]) / total, 2) if total else None,
            "share_matching_and_settlement": round(sum(stages["settled"]) / total, 2) if total else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=40.0, help="orders per second (each one also cancelled)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    with plain_stack("perpline-bench-") as (tmp, api, kafka, _):
        env = {**os.environ, "PERPLINE_KAFKA_BOOTSTRAP": kafka, "PERPLINE_DATA_DIR": tmp}
        made = subprocess.run([sys.executable, "-m", "perpline.cli", "admin", "create-user", "--deposit",
                               "USDT=10000000"], env=env, capture_output=True, text=True, check=True, timeout=120)
        keys = json.loads(made.stdout)
        report = asyncio.run(drive(api, keys, args.rate, args.seconds, args.workers))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
