"""Incremental depth: a snapshot at seq S plus every level change after S equals the snapshot at the
end, for a random order flow through the real engine (pure build) and the API's book mirror."""

from __future__ import annotations

import random
from typing import Any

from perpline.api.readmodel import ReadModel
from perpline.contracts import messages as m
from perpline.matcher import convert
from perpline.matcher.loader import load_core

SYM = "BTCUSDT-PERP"
META = {"trace_id": "t", "causation_id": "c", "ts_ms": 1}


def flow(n: int, seed: int) -> list[m.Msg]:
    rng = random.Random(seed)
    out: list[m.Msg] = []
    live: list[int] = []
    for i in range(1, n + 1):
        roll = rng.random()
        if roll < 0.2 and live:
            oid = live.pop(rng.randrange(len(live)))
            out.append(m.CancelRequest(**META, order_id=oid, account_id=1 + oid % 5, symbol=SYM))
        elif roll < 0.3 and live:
            oid = rng.choice(live)
            out.append(m.AmendRequest(**META, order_id=oid, account_id=1 + oid % 5, symbol=SYM,
                                      price=f"{50000 + rng.randint(-20, 20)}.0", quantity=f"0.0{rng.randint(10, 40)}"))
        else:
            side = rng.choice(("BUY", "SELL"))
            out.append(m.NewOrder(**META, order_id=i, account_id=1 + i % 5, symbol=SYM, side=side, order_type="LIMIT",  # type: ignore[arg-type]
                                  time_in_force="GTC", price=f"{50000 + rng.randint(-20, 20)}.0",
                                  quantity=f"0.0{rng.randint(10, 40)}", client_order_id=f"c{i}"))
            live.append(i)
    return out


def apply(book: dict[tuple[str, str], str], changes: list[Any]) -> None:
    for _, side, price, qty in changes:
        if qty == "0.000":
            book.pop((side, price), None)
        else:
            book[(side, price)] = qty


def levels(model: ReadModel, seq_wanted: int | None = None) -> tuple[int, dict[tuple[str, str], str]]:
    seq, bids, asks = model.depth_at(SYM, 10_000)
    inst_fmt = lambda lots: f"{lots / 1000:.3f}"  # noqa: E731 (test display only: lots are whole)
    return seq, {**{("BUY", p): inst_fmt(q) for p, q in bids}, **{("SELL", p): inst_fmt(q) for p, q in asks}}


def test_snapshot_plus_changes_equals_the_later_snapshot() -> None:
    core = load_core(pure=True)
    engine = core.Engine(SYM, core.EngineConfig())
    model = ReadModel("unused:1", {})
    snapshots = {}
    for i, cmd in enumerate(flow(600, seed=5)):
        for ev in convert.apply(engine, core, cmd):
            model.apply("matcher.events", ev)  # the consumer thread's dispatch, without a broker
        if i in (100, 350):
            snapshots[i] = levels(model)
    final_seq, final = levels(model)
    for seq, book in snapshots.values():
        found = model.depth_changes(SYM, seq)
        assert found is not None
        to_seq, changes = found
        assert to_seq == final_seq and all(c[0] > seq for c in changes)
        apply(book, [(c[0], c[1], c[2], f"{c[3] / 1000:.3f}") for c in changes])
        assert book == final
    assert model.depth_changes(SYM, final_seq) == (final_seq, [])
    assert model.depth_changes(SYM, final_seq + 5) is None  # from the future: resync
