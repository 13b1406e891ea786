"""Matcher benchmark: one seeded flow through each engine, each in a fresh subprocess; prints one JSON.

    python -m bench.matcher [--commands 1000000] [--seed 7]

Flow (one symbol): ~60% limit orders a few ticks around a drifting mid, ~35% cancels of
resting orders, ~5% crossing IOC orders; a few hundred resting orders over ~20 levels.
Engines: the compiled core (per call, events consumed), the same core uncompiled, and a
naive dict-of-deques book. Ratios are measured in the same run; nothing here is a test.
PyPI peer engines are not driven yet (see the README's status).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from typing import Any

FLOW_SEED = 7


def flow(commands: int, seed: int) -> list[tuple[int, int, int, int, int]]:
    """(kind 0 limit / 1 cancel / 2 ioc, order_id, is_buy, price_ticks, qty_lots)."""
    rng = random.Random(seed)
    mid, live, out, next_id = 100_000, [], [], 1
    for _ in range(commands):
        mid += rng.choice((-1, 0, 0, 1))
        roll = rng.random()
        if roll < 0.35 and len(live) > 50:
            victim = live.pop(rng.randrange(len(live)))
            out.append((1, victim, 0, 0, 0))
            continue
        is_buy = rng.random() < 0.5
        if roll < 0.40:
            price = mid + (3 if is_buy else -3)
            out.append((2, next_id, int(is_buy), price, rng.randint(1, 5)))
        else:
            offset = rng.randint(1, 10)
            price = mid - offset if is_buy else mid + offset
            out.append((0, next_id, int(is_buy), price, rng.randint(1, 5)))
            live.append(next_id)
            if len(live) > 600:
                out.append((1, live.pop(0), 0, 0, 0))
        next_id += 1
    return out[:commands]


def run_core(pure: bool, commands: list[tuple[int, int, int, int, int]]) -> dict[str, Any]:
    from perpline.matcher.loader import load_core

    core = load_core(pure=pure)
    engine = core.Engine("B", core.EngineConfig(default_stp=core.STP_NONE))
    place, cancel = engine.place, engine.cancel
    buy, sell, limit, gtc, ioc, trade = core.SIDE_BUY, core.SIDE_SELL, core.TYPE_LIMIT, core.TIF_GTC, core.TIF_IOC, core.EV_TRADE
    volume = 0
    samples: list[int] = []
    clock = time.perf_counter_ns
    started = time.perf_counter()
    for n, (kind, oid, is_buy, price, qty) in enumerate(commands):
        t0 = clock() if n % 64 == 0 else 0
        if kind == 1:
            events = cancel(oid, 1 + (oid & 1), 0)
        else:
            events = place(oid, 1 + (oid & 1), buy if is_buy else sell, limit, ioc if kind == 2 else gtc, price, qty,
                           0, False, "", 0)
        for ev in events:
            if ev.kind == trade:
                volume += ev.qty_lots
        if t0:
            samples.append(clock() - t0)
    elapsed = time.perf_counter() - started
    return {"ops_per_s": len(commands) / elapsed, "volume_lots": volume, **_percentiles(samples)}


def run_naive(commands: list[tuple[int, int, int, int, int]]) -> dict[str, Any]:
    from bench.naive_book import NaiveBook

    book = NaiveBook()
    started = time.perf_counter()
    for kind, oid, is_buy, price, qty in commands:
        if kind == 1:
            book.cancel(oid)
        else:
            book.place(oid, bool(is_buy), price, qty, rest=kind == 0)
    elapsed = time.perf_counter() - started
    return {"ops_per_s": len(commands) / elapsed, "volume_lots": book.volume_lots}


def _percentiles(samples: list[int]) -> dict[str, int]:
    if not samples:
        return {}
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ns": pick(0.5), "p99_ns": pick(0.99), "p999_ns": pick(0.999)}


def child(engine: str, commands: int, seed: int) -> None:
    data = flow(commands, seed)
    result = run_naive(data) if engine == "naive" else run_core(engine == "pure", data)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=FLOW_SEED)
    parser.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        child(args.engine, args.commands, args.seed)
        return
    results = {}
    for engine in ("compiled", "pure", "naive"):
        out = subprocess.run([sys.executable, "-m", "bench.matcher", "--engine", engine, "--commands",
                              str(args.commands), "--seed", str(args.seed)], capture_output=True, text=True, check=True)
        results[engine] = json.loads(out.stdout.strip().splitlines()[-1])
    fast = results["compiled"]
    report = {"commands": args.commands, "ops_per_s": round(fast["ops_per_s"]),
              "p50_ns": fast.get("p50_ns"), "p99_ns": fast.get("p99_ns"), "p999_ns": fast.get("p999_ns"),
              "ops_per_s_pure": round(results["pure"]["ops_per_s"]),
              "ratio_vs_pure": round(fast["ops_per_s"] / results["pure"]["ops_per_s"], 2),
              "ops_per_s_naive": round(results["naive"]["ops_per_s"]),
              "ratio_vs_naive": round(fast["ops_per_s"] / results["naive"]["ops_per_s"], 2),
              "volume_lots": fast["volume_lots"],
              "volumes_agree": len({r["volume_lots"] for r in results.values()}) == 1}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
