"""Matcher benchmark: one seeded flow through every engine, each in a fresh subprocess; prints one JSON.

    python -m bench.matcher [--commands 1000000] [--seed 7] [--recovery-inputs 1000000] [--no-peers]

Flow (one symbol): ~60% limit orders a few ticks around a drifting mid, ~35% cancels of
resting orders, ~5% crossing IOC orders; a few hundred resting orders over ~20 levels.

Engines and figures (ratios are measured in the same run; nothing here is a test):
- compiled core, per call: `core.time_steps` (compiled) calls `Engine.step` once per command and
  reads every event, as a consumer would; per-command latency sampled on every 16th command.
  `ops_per_s_python_loop` is the same per-call path driven from an interpreted Python loop.
- compiled core, batches: `Engine.run` over columnar Batches of 1,000 commands (`batch_ops_per_s`).
- the same core uncompiled (`ops_per_s_pure`), and a naive dict-of-deques book (bench/naive_book.py).
- PyPI engines (bench/peers/), run from `.venv-bench` when it exists (`make bench` creates it
  from bench/requirements-peers.lock), each checked for the same traded volume and final book.
- `decode_ns_per_msg`: the runner's cost per input before the engine (msgspec decode of the
  contract message and adding it to the core's columnar Batch).
- `recovery_s_per_1m`: a real Matcher recovering from a binary WAL of N inputs (no snapshot, so every
  event is rebuilt to be re-emitted), scaled to 1M; `recovery_s_per_1m_state_only` without rebuilding
  the events; `recovery_s_per_1m_json_wal` from version-1 (JSON) records.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FLOW_SEED = 7
REPO = Path(__file__).resolve().parents[1]
BENCH_VENV_PYTHON = REPO / ".venv-bench" / "bin" / "python"
Flow = list[tuple[int, int, int, int, int]]


def flow(commands: int, seed: int) -> Flow:
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


def account_of(order_id: int) -> int:
    return 1 + (order_id & 1)


def commands_for(core: Any, data: Flow) -> list[Any]:
    out = []
    for kind, oid, is_buy, price, qty in data:
        if kind == 1:
            out.append(core.Command(core.CMD_CANCEL, oid, account_of(oid)))
        else:
            out.append(core.Command(core.CMD_PLACE, oid, account_of(oid), core.SIDE_BUY if is_buy else core.SIDE_SELL,
                                    core.TYPE_LIMIT, core.TIF_IOC if kind == 2 else core.TIF_GTC, price, qty,
                                    core.STP_NONE, False, "", 0))
    return out


def book_of(engine: Any) -> list[list[Any]]:
    bids, asks = engine.depth(1_000_000)
    return sorted([["B", p, q] for p, q in bids] + [["S", p, q] for p, q in asks])


def run_core(pure: bool, data: Flow) -> dict[str, Any]:
    from perpline.matcher.loader import is_compiled, load_core

    core = load_core(pure=pure)
    assert pure or is_compiled(core), "compiled core missing or stale: run `python -m perpline.matcher.build`"
    cmds = commands_for(core, data)
    engine = core.Engine("B", core.EngineConfig(default_stp=core.STP_NONE))
    timing = core.time_steps(engine, cmds, 16)
    result = {"ops_per_s": len(cmds) / (timing.elapsed_ns / 1e9), "volume_lots": timing.volume_lots,
              "events": timing.events, "book": book_of(engine), **_percentiles(timing.samples_ns)}
    if pure:
        return result
    batch_engine = core.Engine("B", core.EngineConfig(default_stp=core.STP_NONE))
    batch = core.time_batches(batch_engine, core.batches_of(cmds, 1000))
    assert batch.volume_lots == timing.volume_lots and batch_engine.state_hash() == engine.state_hash()
    result["batch_ops_per_s"] = len(cmds) / (batch.elapsed_ns / 1e9)
    result["ops_per_s_python_loop"] = _python_loop(core, cmds, timing.volume_lots)
    return result


def _python_loop(core: Any, cmds: list[Any], volume_lots: int) -> float:
    engine = core.Engine("B", core.EngineConfig(default_stp=core.STP_NONE))
    step, events, trade = engine.step, engine.events, core.EV_TRADE
    volume = 0
    started = time.perf_counter()
    for cmd in cmds:
        if step(cmd):
            for ev in events():
                if ev.kind == trade:
                    volume += ev.qty_lots
    elapsed = time.perf_counter() - started
    assert volume == volume_lots
    return len(cmds) / elapsed


def run_naive(data: Flow) -> dict[str, Any]:
    from bench.peers import naive_reference

    return naive_reference(data)


def encoded_inputs(data: Flow) -> list[bytes]:
    """The flow as the contract messages the runner consumes from `orders` (BTCUSDT-PERP)."""
    from perpline.contracts import codec
    from perpline.contracts import messages as m

    out = []
    for kind, oid, is_buy, price, qty in data:
        if kind == 1:
            msg: Any = m.CancelRequest(trace_id="t", causation_id="c", ts_ms=1, symbol="BTCUSDT-PERP", order_id=oid,
                                       account_id=account_of(oid))
        else:
            msg = m.NewOrder(trace_id="t", causation_id="c", ts_ms=1, symbol="BTCUSDT-PERP", order_id=oid,
                             account_id=account_of(oid), client_order_id="", side="BUY" if is_buy else "SELL",
                             order_type="LIMIT", time_in_force="IOC" if kind == 2 else "GTC",
                             price=f"{price // 10}.{price % 10}", quantity=f"0.{qty:03d}", stp="NONE")
        out.append(codec.encode(msg))
    return out


def run_decode(data: Flow) -> dict[str, Any]:
    """The runner's per-input work before the engine: msgspec decode + adding it to a core Batch."""
    from perpline.contracts import codec
    from perpline.matcher import convert
    from perpline.matcher.loader import load_core

    core = load_core()
    raw = encoded_inputs(data[:100_000])
    started = time.perf_counter_ns()
    batch = core.Batch()
    for n, payload in enumerate(raw):
        if n % 1000 == 0:
            batch = core.Batch()
        convert.add_input(core, batch, codec.decode("orders", payload))
    return {"decode_ns_per_msg": (time.perf_counter_ns() - started) / len(raw)}


def run_recovery(inputs: int) -> dict[str, Any]:
    """Write a WAL of `inputs` encoded orders as the runner records them (one binary record per batch of
    1,000), then time a real recovery; then the same WAL again without building the re-emitted events
    (state only), and a WAL of version-1 records (raw JSON, what the runner wrote before issue 22)."""
    from perpline.config import topic_map
    from perpline.matcher.runner import Matcher, wal_record
    from perpline.matcher.segments import SegmentedWal

    payloads = encoded_inputs(flow(inputs, FLOW_SEED + 1))
    report: dict[str, Any] = {"recovery_inputs": inputs}
    with tempfile.TemporaryDirectory(prefix="perpline-bench-") as tmp:
        writer = Matcher(Path(tmp) / "binary", "127.0.0.1:1", topic_map(), "never")
        wal = SegmentedWal(Path(tmp) / "binary" / "wal", "never")
        wal.open()
        for start in range(0, len(payloads), 1000):
            record, letters = writer._encode([(0, n, payloads[n]) for n in range(start, min(start + 1000, inputs))])
            assert not letters
            wal.append_batch([record])
        wal.close()
        report["recovery_s_per_1m"] = _time_recovery(Path(tmp) / "binary", inputs)
        real_events = Matcher._events
        Matcher._events = lambda _self, _engine, part: [[]] * len(part.trace_ids)  # type: ignore[method-assign]
        report["recovery_s_per_1m_state_only"] = _time_recovery(Path(tmp) / "binary", inputs)
        Matcher._events = real_events  # type: ignore[method-assign]
        wal = SegmentedWal(Path(tmp) / "json" / "wal", "never")
        wal.open()
        for start in range(0, len(payloads), 1000):
            wal.append_batch([wal_record(0, n, payloads[n]) for n in range(start, min(start + 1000, inputs))])
        wal.close()
        report["recovery_s_per_1m_json_wal"] = _time_recovery(Path(tmp) / "json", inputs)
    return report


def _time_recovery(directory: Path, inputs: int) -> float:
    """A fresh Matcher's recover() over the WAL in `directory`, in seconds per 1M inputs."""
    from perpline.config import topic_map
    from perpline.matcher.runner import Matcher

    matcher = Matcher(directory, "127.0.0.1:1", topic_map(), "never")
    started = time.perf_counter()
    replayed = matcher.recover()
    elapsed = time.perf_counter() - started
    matcher.wal.close()
    assert len(replayed) == inputs
    return elapsed * 1_000_000 / inputs


def _percentiles(samples: list[int]) -> dict[str, int]:
    if not samples:
        return {}
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ns": pick(0.5), "p99_ns": pick(0.99), "p999_ns": pick(0.999)}


def child(engine: str, commands: int, seed: int, recovery_inputs: int) -> dict[str, Any]:
    if engine == "recovery":
        return run_recovery(recovery_inputs)
    data = flow(commands, seed)
    if engine == "decode":
        return run_decode(data)
    if engine == "naive":
        return run_naive(data)
    if engine.startswith("peer:"):
        from bench.peers import run_peer

        return run_peer(engine.removeprefix("peer:"), data)
    return run_core(engine == "pure", data)


def _spawn(engine: str, args: argparse.Namespace, python: str = sys.executable) -> dict[str, Any] | None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([python, "-m", "bench.matcher", "--engine", engine, "--commands", str(args.commands),
                           "--seed", str(args.seed), "--recovery-inputs", str(args.recovery_inputs)],
                          capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode != 0:
        sys.stderr.write(f"{engine}: failed\n{done.stderr[-2000:]}\n")
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _peer_names() -> list[str]:
    if not BENCH_VENV_PYTHON.exists():
        return []
    try:
        from bench.peers import PEERS
    except ImportError:
        return []
    return sorted(PEERS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=FLOW_SEED)
    parser.add_argument("--recovery-inputs", type=int, default=1_000_000, help="0: skip the recovery figure")
    parser.add_argument("--no-peers", action="store_true", help="skip the PyPI engines")
    parser.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        print(json.dumps(child(args.engine, args.commands, args.seed, args.recovery_inputs)))
        return
    fast = _spawn("compiled", args)
    pure = _spawn("pure", args)
    naive = _spawn("naive", args)
    assert fast is not None and pure is not None and naive is not None
    report: dict[str, Any] = {
        "commands": args.commands, "ops_per_s": round(fast["ops_per_s"]), "p50_ns": fast.get("p50_ns"),
        "p99_ns": fast.get("p99_ns"), "p999_ns": fast.get("p999_ns"), "batch_ops_per_s": round(fast["batch_ops_per_s"]),
        "ops_per_s_python_loop": round(fast["ops_per_s_python_loop"]), "events": fast["events"],
        "ops_per_s_pure": round(pure["ops_per_s"]), "ratio_vs_pure": round(fast["ops_per_s"] / pure["ops_per_s"], 2),
        "ops_per_s_naive": round(naive["ops_per_s"]), "ratio_vs_naive": round(fast["ops_per_s"] / naive["ops_per_s"], 2),
        "volume_lots": fast["volume_lots"],
        "volumes_agree": fast["volume_lots"] == pure["volume_lots"] == naive["volume_lots"],
        "books_agree": fast["book"] == pure["book"] == naive["book"]}
    decode = _spawn("decode", args)
    if decode is not None:
        report["decode_ns_per_msg"] = round(decode["decode_ns_per_msg"])
    if not args.no_peers:
        for name in _peer_names():
            peer = _spawn(f"peer:{name}", args, python=str(BENCH_VENV_PYTHON))
            if peer is None:
                report[f"ops_per_s_{name}"] = None
                continue
            report[f"ops_per_s_{name}"] = round(peer["ops_per_s"])
            report[f"ratio_vs_{name}"] = round(fast["ops_per_s"] / peer["ops_per_s"], 2)
            report[f"agrees_{name}"] = peer["volume_lots"] == fast["volume_lots"] and peer["book"] == fast["book"]
    if args.recovery_inputs > 0:
        recovery = _spawn("recovery", args)
        if recovery is not None:
            for name in ("recovery_s_per_1m", "recovery_s_per_1m_state_only", "recovery_s_per_1m_json_wal"):
                report[name] = round(recovery[name], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
