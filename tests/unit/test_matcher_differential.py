"""Differential test: the core (pure and compiled) against the naive reference book.

Random sequences of place / cancel / cancel_by_client_id / amend / cancel_all over a few
accounts and a narrow price range, every order type, TIF and STP mode, and configs with
tiny limits so the rejection and budget paths are hit. After every step: identical event
streams and depth, gap-free seq, and the core's own invariants (book never crossed, level
totals == sum of order leaves, indexes consistent). At the end: replay and snapshot give
the same state_hash.
"""

from __future__ import annotations

import random
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from perpline.matcher.loader import compiled_fresh, load_core
from perpline.matcher.naive import NaiveBook

ACCOUNTS = st.integers(1, 3)
PRICES = st.integers(98, 102)
COIDS = st.sampled_from(["", "", "a", "b"])
FRESH_OR_OLD = st.sampled_from([0, 0, 0, 0, 0, 1, 2, 3, 5])  # 0: a fresh id, else one used before
OLD = st.integers(1, 6)  # an id used before: live, finished or never accepted
INPUT_IDS = st.sampled_from([0, 0, 0, 1, 2, 3, 4])  # a cancel's / amend's identity: 0 none, else maybe a copy

PLACE = st.tuples(st.just("place"), FRESH_OR_OLD, ACCOUNTS, st.sampled_from([1, 2]),
                  st.sampled_from([1, 1, 1, 1, 2]), st.sampled_from([1, 1, 1, 2, 3, 4, 5]), PRICES,
                  st.integers(1, 6), st.sampled_from([-1, -1, 0, 1, 2, 3]), st.booleans(), COIDS)
CANCEL = st.tuples(st.just("cancel"), OLD, ACCOUNTS, INPUT_IDS)
CANCEL_COID = st.tuples(st.just("cancel_coid"), ACCOUNTS, COIDS, INPUT_IDS)
AMEND = st.tuples(st.just("amend"), OLD, ACCOUNTS, PRICES, st.integers(0, 7), INPUT_IDS)
CANCEL_ALL = st.tuples(st.just("cancel_all"), ACCOUNTS, INPUT_IDS)
BY_NAME = {"place": PLACE, "cancel": CANCEL, "cancel_coid": CANCEL_COID, "amend": AMEND, "cancel_all": CANCEL_ALL}
OP = st.sampled_from(["place"] * 12 + ["cancel"] * 2 + ["amend"] * 3 + ["cancel_coid", "cancel_all"]).flatmap(
    lambda name: BY_NAME[name])
OPS = st.lists(OP, min_size=5, max_size=80)

CONFIGS = st.fixed_dictionaries({
    "max_orders": st.sampled_from([4, 1_000_000]),
    "max_levels": st.sampled_from([2, 100_000]),
    "max_events_per_input": st.sampled_from([4, 6, 10_000]),
    "max_qty_lots": st.sampled_from([5, 10**12]),
    "max_price_ticks": st.sampled_from([103, 10**12]),
    "market_protection_ppm": st.sampled_from([20_000, 50_000]),
    "default_stp": st.integers(0, 3),
    "max_seen_ids": st.sampled_from([0, 3, 1_000_000]),
    "max_open_per_account": st.sampled_from([0, 3]),
})

IMPLS = ["pure", "compiled"]


def _core(impl: str) -> ModuleType:
    if impl == "compiled" and not compiled_fresh():
        pytest.skip("no fresh compiled core: run `python -m perpline.matcher.build`")
    return load_core(pure=impl == "pure")


def _pick(ids: list[int], pick: int, next_id: int) -> tuple[int, int]:
    """(order id, next fresh id) for an ID_PICK value."""
    if pick == 0 or not ids:
        return next_id, next_id + 1
    return ids[-pick % len(ids)], next_id


def _apply(book: Any, op: tuple[Any, ...], order_id: int, ts_ns: int) -> list[Any]:
    name = op[0]
    if name == "place":
        _, _, acct, side, otype, tif, price, qty, stp, reduce_only, coid = op
        return list(book.place(order_id, acct, side, otype, tif, price, qty, stp, reduce_only, coid, ts_ns))
    if name == "cancel":
        return list(book.cancel(order_id, op[2], ts_ns, op[-1]))
    if name == "cancel_coid":
        return list(book.cancel_by_client_id(op[1], op[2], ts_ns, op[-1]))
    if name == "amend":
        return list(book.amend(order_id, op[2], op[3], op[4], ts_ns, op[-1]))
    assert name == "cancel_all"
    return list(book.cancel_all(op[1], ts_ns, op[-1]))


def _run(core: ModuleType, config: dict[str, int], ops: list[tuple[Any, ...]]) -> Any:
    engine = core.Engine("BTCUSDT", core.EngineConfig(**config))
    naive = NaiveBook("BTCUSDT", core.EngineConfig(**config))
    ids: list[int] = []
    next_id = 1
    last_seq = 0
    for step, op in enumerate(ops):
        order_id = 0
        if op[0] in ("place", "cancel", "amend"):
            order_id, next_id = _pick(ids, op[1], next_id)
            ids.append(order_id)
        got = _apply(engine, op, order_id, 1000 + step)
        want = _apply(naive, op, order_id, 1000 + step)
        assert [e.as_tuple() for e in got] == [e.as_tuple() for e in want], f"step {step}: {op}"
        for ev in got:
            assert ev.seq == last_seq + 1
            last_seq = ev.seq
            event(f"kind {ev.kind} code {ev.code}")
        assert len(got) <= config["max_events_per_input"]
        assert engine.seq == last_seq == naive.seq
        assert engine.depth(100) == naive.depth(100)
        engine.check_invariants()
        for account in (1, 2, 3):
            assert [o.order_id for o in engine.open_orders(account)] == naive.open_order_ids(account)
    return engine


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=CONFIGS, ops=OPS)
def test_core_matches_naive(impl: str, config: dict[str, int], ops: list[tuple[Any, ...]]) -> None:
    core = _core(impl)
    engine = _run(core, config, ops)
    restored = core.Engine.from_snapshot(engine.to_snapshot())
    assert restored.state_hash() == engine.state_hash()


@settings(max_examples=50, deadline=None)
@given(config=CONFIGS, ops=OPS)
def test_replay_and_pure_compiled_agree(config: dict[str, int], ops: list[tuple[Any, ...]]) -> None:
    pure = _run(load_core(pure=True), config, ops)
    again = _run(load_core(pure=True), config, ops)
    assert pure.state_hash() == again.state_hash()
    if compiled_fresh():
        compiled = _run(load_core(pure=False), config, ops)
        assert compiled.to_snapshot() == pure.to_snapshot()


def _input_id(rng: random.Random) -> int:
    """Mostly none, often an identity seen before (a copy), now and then one out of range."""
    return rng.choice([0, 0, 0, rng.randint(1, 12), rng.randint(1, 12), -1])


def _random_ops(rng: random.Random, count: int) -> list[tuple[Any, ...]]:
    """Long, dense sequences: balanced sides around a mid price, so sweeps and STP are common."""
    ops: list[tuple[Any, ...]] = []
    for _ in range(count):
        roll = rng.random()
        account = rng.randint(1, 3)
        if roll < 0.65:
            side = rng.choice([1, 2])
            price = rng.randint(98, 103) if side == 1 else rng.randint(97, 102)
            ops.append(("place", rng.choice([0, 0, 0, 0, 0, 0, 1, 3]), account, side, rng.choice([1, 1, 1, 1, 2]),
                        rng.choice([1, 1, 1, 2, 3, 4, 5]), price, rng.randint(1, 8), rng.choice([-1, 0, 1, 2, 3]),
                        rng.random() < 0.2, rng.choice(["", "", "", "a", "b"])))
        elif roll < 0.78:
            ops.append(("cancel", rng.randint(1, 8), account, _input_id(rng)))
        elif roll < 0.93:
            ops.append(("amend", rng.randint(1, 8), account, rng.randint(97, 103), rng.randint(0, 9), _input_id(rng)))
        elif roll < 0.97:
            ops.append(("cancel_coid", account, rng.choice(["a", "b", ""]), _input_id(rng)))
        else:
            ops.append(("cancel_all", account, _input_id(rng)))
    return ops


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=CONFIGS, seed=st.integers(0, 2**32 - 1))
def test_core_matches_naive_long_sequences(impl: str, config: dict[str, int], seed: int) -> None:
    core = _core(impl)
    engine = _run(core, config, _random_ops(random.Random(seed), 300))
    assert core.Engine.from_snapshot(engine.to_snapshot()).state_hash() == engine.state_hash()


def _add_to_batch(batch: Any, op: tuple[Any, ...], order_id: int, ts_ns: int) -> None:
    name = op[0]
    if name == "place":
        _, _, acct, side, otype, tif, price, qty, stp, reduce_only, coid = op
        batch.place(order_id, acct, side, otype, tif, price, qty, stp, reduce_only, coid, ts_ns)
    elif name == "cancel":
        batch.cancel(order_id, op[2], ts_ns, op[-1])
    elif name == "cancel_coid":
        batch.cancel_by_client_id(op[1], op[2], ts_ns, op[-1])
    elif name == "amend":
        batch.amend(order_id, op[2], op[3], op[4], ts_ns, op[-1])
    else:
        batch.cancel_all(op[1], ts_ns, op[-1])


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=CONFIGS, seed=st.integers(0, 2**32 - 1), chunk=st.integers(1, 40))
def test_batch_run_matches_one_call_per_input(impl: str, config: dict[str, int], seed: int, chunk: int) -> None:
    """Engine.run over columnar Batches emits exactly the events of one call per input (which the
    tests above hold against the naive book), with `ends` marking each input's events."""
    core = _core(impl)
    ops = _random_ops(random.Random(seed), 200)
    single = core.Engine("BTCUSDT", core.EngineConfig(**config))
    batched = core.Engine("BTCUSDT", core.EngineConfig(**config))
    ids: list[int] = []
    next_id = 1
    for start in range(0, len(ops), chunk):
        batch = core.Batch()
        want: list[list[Any]] = []
        for step in range(start, min(start + chunk, len(ops))):
            op = ops[step]
            order_id = 0
            if op[0] in ("place", "cancel", "amend"):
                order_id, next_id = _pick(ids, op[1], next_id)
                ids.append(order_id)
            want.append([e.as_tuple() for e in _apply(single, op, order_id, 1000 + step)])
            _add_to_batch(batch, op, order_id, 1000 + step)
        count = batched.run(batch)
        got = [e.as_tuple() for e in batched.events()]
        assert count == len(got) == sum(len(w) for w in want)
        begin = 0
        for one, end in zip(want, batched.ends, strict=True):
            assert got[begin:end] == one
            begin = end
        batched.check_invariants()
    assert batched.state_hash() == single.state_hash()


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_numbers_beyond_64_bits_are_refused_not_raised(impl: str) -> None:
    """A Batch stores a number outside the signed 64-bit range as -1: the input is rejected with the
    code it would get anyway, and nothing raises or changes."""
    core = _core(impl)
    engine = core.Engine("BTCUSDT", core.EngineConfig())
    batch = core.Batch()
    huge = 1 << 64
    batch.place(huge, 1, core.SIDE_BUY, core.TYPE_LIMIT, core.TIF_GTC, 100, 1, core.STP_DEFAULT, False, "", 1)
    batch.place(1, 1, core.SIDE_BUY, core.TYPE_LIMIT, core.TIF_GTC, huge, 1, core.STP_DEFAULT, False, "", 1)
    batch.place(2, 1, core.SIDE_BUY, core.TYPE_LIMIT, core.TIF_GTC, 100, -huge, core.STP_DEFAULT, False, "", 1)
    batch.cancel(3, 1, 1, huge)
    assert engine.run(batch) == 4
    assert [(e.kind, e.code) for e in engine.events()] == [
        (core.EV_REJECTED, core.R_BAD_INPUT), (core.EV_REJECTED, core.R_BAD_PRICE),
        (core.EV_REJECTED, core.R_BAD_QTY), (core.EV_REJECTED, core.R_BAD_INPUT)]
    assert engine.order_count() == 0 and list(engine.ends) == [1, 2, 3, 4]
