"""Matcher core benchmark: the same generated workload through the pure source and the mypyc build.

Workload (seeded): 70% limit orders that rest near the touch, 20% crossing orders (IOC
limits and market orders that sweep a level or two), 10% cancels of earlier orders.
Prints inputs/s and events/s for each build and the compiled/pure RATIO measured in the
same run; checks both builds end in the same state_hash. No assertions on speed.

    python bench/matcher_bench.py [--orders 200000] [--seed 7]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perpline.matcher.build import build  # noqa: E402
from perpline.matcher.loader import compiled_fresh, is_compiled, load_core  # noqa: E402

MID_TICKS = 1_000_000
ACCOUNTS = 200


def workload(count: int, seed: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    ops: list[tuple[Any, ...]] = []
    placed: list[tuple[int, int]] = []  # (order_id, account_id)
    for order_id in range(1, count + 1):
        roll = rng.random()
        account = rng.randint(1, ACCOUNTS)
        side = rng.choice((1, 2))
        if roll < 0.70:
            offset = rng.randint(1, 300)
            price = MID_TICKS - offset if side == 1 else MID_TICKS + offset
            ops.append(("place", order_id, account, side, 1, 1, price, rng.randint(1, 20), -1, False, ""))
            placed.append((order_id, account))
        elif roll < 0.90:
            if rng.random() < 0.5:
                price = MID_TICKS + 40 if side == 1 else MID_TICKS - 40
                ops.append(("place", order_id, account, side, 1, 2, price, rng.randint(5, 60), -1, False, ""))
            else:
                ops.append(("place", order_id, account, side, 2, 2, 0, rng.randint(5, 60), -1, False, ""))
        else:
            if placed:
                victim, owner = placed.pop(rng.randrange(len(placed)))
                ops.append(("cancel", victim, owner))
    return ops


def run(core: ModuleType, ops: list[tuple[Any, ...]]) -> tuple[float, int, str]:
    engine = core.Engine("BTCUSDT", core.EngineConfig())
    place = engine.place
    cancel = engine.cancel
    events = 0
    gc.collect()
    started = time.perf_counter()
    for ts_ns, op in enumerate(ops):
        if op[0] == "place":
            events += len(place(op[1], op[2], op[3], op[4], op[5], op[6], op[7], op[8], op[9], op[10], ts_ns))
        else:
            events += len(cancel(op[1], op[2], ts_ns))
    elapsed = time.perf_counter() - started
    return elapsed, events, engine.state_hash()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not compiled_fresh():
        build()
    ops = workload(args.orders, args.seed)
    results = {}
    for name, pure in (("pure", True), ("compiled", False)):
        core = load_core(pure=pure)
        assert is_compiled(core) != pure
        run(core, ops[:5_000])  # warm up
        elapsed, events, digest = run(core, ops)
        results[name] = (elapsed, digest)
        print(f"{name:9s} {len(ops):>8,} inputs {events:>9,} events {elapsed:7.3f} s "
              f"{len(ops) / elapsed:>12,.0f} inputs/s {events / elapsed:>12,.0f} events/s  state {digest[:12]}")
    same = results["pure"][1] == results["compiled"][1]
    print(f"ratio compiled/pure: {results['pure'][0] / results['compiled'][0]:.2f}x  (same final state: {same})")


if __name__ == "__main__":
    main()
