"""Between contract messages (decimal strings) and the engine core (integers). Shell side, not compiled."""

from __future__ import annotations

import hashlib
from typing import Any

from perpline.contracts import messages as m
from perpline.contracts.instruments import Instrument, instrument

_SIDES = {"BUY": "SIDE_BUY", "SELL": "SIDE_SELL"}
_TYPES = {"LIMIT": "TYPE_LIMIT", "MARKET": "TYPE_MARKET"}
_TIFS = {"GTC": "TIF_GTC", "IOC": "TIF_IOC", "FOK": "TIF_FOK", "GTX": "TIF_GTX"}
_STPS = {"DEFAULT": "STP_DEFAULT", "NONE": "STP_NONE", "EXPIRE_TAKER": "STP_EXPIRE_TAKER",
         "EXPIRE_MAKER": "STP_EXPIRE_MAKER", "EXPIRE_BOTH": "STP_EXPIRE_BOTH"}


_CODES: dict[int, dict[str, int]] = {}
MAX_INPUT_ID = (1 << 63) - 1  # the engine's ids are positive signed 64-bit integers
MAX_CACHED_NUMBERS = 65_536  # per instrument and direction; a full cache starts over


class Grid:
    """One instrument's price and quantity conversions, memoized. Orders and events near the market
    repeat the same few hundred numbers, and parsing or formatting a decimal string costs about a
    microsecond each; a hit is one dict lookup. A miss asks the Instrument (the one place for the
    rule), and a refused number raises there and is never cached. Bounded: a full cache is cleared."""

    def __init__(self, inst: Instrument) -> None:
        self.inst = inst
        self.symbol = inst.symbol
        self._price_in: dict[str, int] = {}
        self._qty_in: dict[str, int] = {}
        self._price_out: dict[int, str] = {}
        self._qty_out: dict[int, str] = {}

    def parse_price(self, text: str) -> int:
        found = self._price_in.get(text)
        if found is None:
            found = _remember(self._price_in, text, self.inst.parse_price(text))
        return found

    def parse_qty(self, text: str) -> int:
        found = self._qty_in.get(text)
        if found is None:
            found = _remember(self._qty_in, text, self.inst.parse_qty(text))
        return found

    def format_price(self, price_ticks: int) -> str:
        found = self._price_out.get(price_ticks)
        if found is None:
            found = _remember(self._price_out, price_ticks, self.inst.format_price(price_ticks))
        return found

    def format_qty(self, qty_lots: int) -> str:
        found = self._qty_out.get(qty_lots)
        if found is None:
            found = _remember(self._qty_out, qty_lots, self.inst.format_qty(qty_lots))
        return found


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    if len(cache) >= MAX_CACHED_NUMBERS:
        cache.clear()
    cache[key] = value
    return value


_GRIDS: dict[str, Grid] = {}


def grid(symbol: str) -> Grid:
    """The memoized conversions of a catalog symbol; raises UnitError for an unknown one."""
    found = _GRIDS.get(symbol)
    if found is None or found.inst is not instrument(symbol):  # a reloaded catalog gets new caches
        found = _GRIDS[symbol] = Grid(instrument(symbol))
    return found


def _codes(core: Any) -> dict[str, int]:
    """Wire enum name -> the core's integer, per core module (pure and compiled are both in use)."""
    found = _CODES.get(id(core))
    if found is None:
        names = {**_SIDES, **_TYPES, **_TIFS, **_STPS}
        found = _CODES[id(core)] = {wire: int(getattr(core, attr)) for wire, attr in names.items()}
    return found


def to_command(core: Any, cmd: m.Msg) -> Any:
    """The engine command for one input; raises UnitError when its numbers are not on the grid."""
    inst = grid(cmd.symbol)
    ts_ns = cmd.ts_ms * 1_000_000
    if isinstance(cmd, m.NewOrder):
        codes = _codes(core)
        price_ticks = inst.parse_price(cmd.price) if cmd.price is not None else 0
        return core.Command(core.CMD_PLACE, cmd.order_id, cmd.account_id, codes[cmd.side], codes[cmd.order_type],
                            codes[cmd.time_in_force], price_ticks, inst.parse_qty(cmd.quantity), codes[cmd.stp],
                            cmd.reduce_only, cmd.client_order_id, ts_ns)
    if isinstance(cmd, m.AmendRequest):
        return core.Command(core.CMD_AMEND, cmd.order_id, cmd.account_id, price_ticks=inst.parse_price(cmd.price),
                            qty_lots=inst.parse_qty(cmd.quantity), ts_ns=ts_ns, input_id=input_id(cmd))
    assert isinstance(cmd, m.CancelRequest)
    return core.Command(core.CMD_CANCEL, cmd.order_id, cmd.account_id, ts_ns=ts_ns, input_id=input_id(cmd))


def input_id(cmd: m.CancelRequest | m.AmendRequest) -> int:
    """The identity of a cancel or an amend: its kind, order id and cause (the request, fill leg or
    liquidation the accounts processor emitted it for), hashed to 63 bits. A copy of the same input
    (a redelivery, or the records of an aborted transaction the broker still shows) has the same
    identity and the engine applies it once (core module docstring); two different requests about one
    order have different causes. Without a cause there is no identity: 0, applied every time."""
    if not cmd.causation_id:
        return 0
    digest = hashlib.blake2b(f"{_cause_id(cmd)}:{cmd.causation_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") & MAX_INPUT_ID) or 1


def fields(core: Any, cmd: m.Msg) -> tuple[int, ...]:
    """One input as the core consumes it: kind, order_id, account_id, side, order_type, tif, price_ticks,
    qty_lots, stp, reduce_only, ts_ns, input_id (walrec.BATCH_COLUMNS); raises UnitError when its numbers
    are not on the instrument's grid."""
    inst = grid(cmd.symbol)
    ts_ns = cmd.ts_ms * 1_000_000
    if isinstance(cmd, m.NewOrder):
        codes = _codes(core)
        price_ticks = inst.parse_price(cmd.price) if cmd.price is not None else 0
        return (core.CMD_PLACE, cmd.order_id, cmd.account_id, codes[cmd.side], codes[cmd.order_type],
                codes[cmd.time_in_force], price_ticks, inst.parse_qty(cmd.quantity), codes[cmd.stp],
                1 if cmd.reduce_only else 0, ts_ns, 0)
    if isinstance(cmd, m.AmendRequest):
        return (core.CMD_AMEND, cmd.order_id, cmd.account_id, 0, 0, 0, inst.parse_price(cmd.price),
                inst.parse_qty(cmd.quantity), 0, 0, ts_ns, input_id(cmd))
    assert isinstance(cmd, m.CancelRequest)
    return (core.CMD_CANCEL, cmd.order_id, cmd.account_id, 0, 0, 0, 0, 0, 0, 0, ts_ns, input_id(cmd))


def add_input(core: Any, batch: Any, cmd: m.Msg) -> None:
    """Append one input to a core Batch (one compiled call, no command object); raises UnitError
    and adds nothing when its numbers are not on the instrument's grid."""
    kind, order_id, account_id, side, order_type, tif, price_ticks, qty_lots, stp, reduce_only, ts_ns, iid = \
        fields(core, cmd)
    batch._add(kind, order_id, account_id, side, order_type, tif, price_ticks, qty_lots, stp, reduce_only != 0,
               client_order_id(cmd), ts_ns, iid)


def client_order_id(cmd: m.Msg) -> str:
    """A NewOrder's client order id; "" for the other inputs (as the core's Batch takes them)."""
    return cmd.client_order_id if type(cmd) is m.NewOrder else ""  # type: ignore[attr-defined]


def run_batch(engine: Any, core: Any, causes: list[m.Msg], batch: Any) -> list[list[m.Msg]]:
    """Apply a Batch of ONE symbol's inputs (`causes[i]` is the input batch row i came from) with one
    `Engine.run`; the contract events of each input, in order (seq from the engine)."""
    if not causes:
        return []
    engine.run(batch)
    kinds = [_CAUSE_KINDS[type(cause)] for cause in causes]
    return events_of(engine, core, grid(causes[0].symbol), kinds, [c.trace_id for c in causes],
                     [_cause_id(c) for c in causes])


def events_of(engine: Any, core: Any, inst: Grid, kinds: Any, trace_ids: list[str],
              cause_ids: list[str]) -> list[list[m.Msg]]:
    """The contract events of each input of the engine's last `run` (row i: its CMD_* kind, trace id and
    the causation id its events carry)."""
    raw = engine.events()
    out: list[list[m.Msg]] = []
    start = 0
    for kind, trace_id, cause_id, end in zip(kinds, trace_ids, cause_ids, engine.ends, strict=True):
        if start == end:
            out.append([])
            continue
        out.append([to_message(core, inst, raw[i], kind, trace_id, cause_id) for i in range(start, end)])
        start = end
    return out


def apply_batch(engine: Any, core: Any, inputs: list[tuple[m.Msg, Any]]) -> list[list[m.Msg]]:
    """Apply (input, Command) pairs of ONE symbol with one batch call; see run_batch."""
    batch = core.Batch()
    for _, command in inputs:
        batch.add(command)
    return run_batch(engine, core, [cause for cause, _ in inputs], batch)


def apply(engine: Any, core: Any, cmd: m.Msg) -> list[m.Msg]:
    """Apply one input to its engine; returns the contract events (seq from the engine)."""
    batch = core.Batch()
    add_input(core, batch, cmd)
    return run_batch(engine, core, [cmd], batch)[0]


def to_message(core: Any, inst: Grid, ev: Any, cause_kind: int, trace_id: str, cause_id: str) -> m.Msg:
    """The contract event for one engine event (`cause_kind`: the CMD_* kind of its input). Every field is passed by name, never by `**dict`:
    msgspec builds a struct from unpacked keywords about 8x slower (2 us against 0.25 us)."""
    ts_ms = ev.ts_ns // 1_000_000
    symbol = inst.symbol
    seq = ev.seq
    side = "BUY" if ev.side == core.SIDE_BUY else "SELL"
    kind = ev.kind
    if kind == core.EV_TRADE:
        return m.Trade(trace_id=trace_id, causation_id=cause_id, ts_ms=ts_ms, symbol=symbol, seq=seq,
                       trade_id=ev.trade_id, price=inst.format_price(ev.price_ticks),
                       quantity=inst.format_qty(ev.qty_lots), taker_side=side,  # type: ignore[arg-type]
                       taker_order_id=ev.order_id, taker_account_id=ev.account_id,
                       taker_leaves=inst.format_qty(ev.leaves_lots), maker_order_id=ev.maker_order_id,
                       maker_account_id=ev.maker_account_id, maker_leaves=inst.format_qty(ev.maker_leaves_lots))
    if kind == core.EV_ACCEPTED:
        return m.OrderAccepted(trace_id=trace_id, causation_id=cause_id, ts_ms=ts_ms, symbol=symbol, seq=seq,
                               order_id=ev.order_id, account_id=ev.account_id, side=side,  # type: ignore[arg-type]
                               quantity=inst.format_qty(ev.qty_lots))
    if kind == core.EV_RESTED:
        return m.OrderRested(trace_id=trace_id, causation_id=cause_id, ts_ms=ts_ms, symbol=symbol, seq=seq,
                             order_id=ev.order_id, account_id=ev.account_id, side=side,  # type: ignore[arg-type]
                             price=inst.format_price(ev.price_ticks), leaves=inst.format_qty(ev.leaves_lots))
    if kind == core.EV_CANCELLED:
        return m.OrderCancelled(trace_id=trace_id, causation_id=cause_id, ts_ms=ts_ms, symbol=symbol, seq=seq,
                                order_id=ev.order_id, account_id=ev.account_id,
                                leaves=inst.format_qty(ev.leaves_lots), code=ev.code)
    if kind == core.EV_EXPIRED:
        return m.OrderExpired(trace_id=trace_id, causation_id=cause_id, ts_ms=ts_ms, symbol=symbol, seq=seq,
                              order_id=ev.order_id, account_id=ev.account_id,
                              leaves=inst.format_qty(ev.leaves_lots), code=ev.code)
    if kind == core.EV_AMENDED:
        return m.OrderAmended(trace_id=trace_id, causation_id=cause_id, ts_ms=ts_ms, symbol=symbol, seq=seq,
                              order_id=ev.order_id, account_id=ev.account_id,
                              price=inst.format_price(ev.price_ticks), quantity=inst.format_qty(ev.qty_lots),
                              leaves=inst.format_qty(ev.leaves_lots))
    if kind == core.EV_REJECTED and cause_kind == core.CMD_CANCEL:
        return m.CancelRejected(trace_id=trace_id, causation_id=cause_id, ts_ms=ts_ms, symbol=symbol, seq=seq,
                                order_id=ev.order_id, account_id=ev.account_id, code=ev.code)
    if kind == core.EV_REJECTED and cause_kind == core.CMD_AMEND:
        return m.AmendRejected(trace_id=trace_id, causation_id=cause_id, ts_ms=ts_ms, symbol=symbol, seq=seq,
                               order_id=ev.order_id, account_id=ev.account_id, code=ev.code)
    if kind == core.EV_REJECTED:
        return m.OrderRejected(trace_id=trace_id, causation_id=cause_id, ts_ms=ts_ms, symbol=symbol, seq=seq,
                               order_id=ev.order_id, account_id=ev.account_id, code=ev.code)
    raise AssertionError(f"unknown engine event kind {kind}")


_CAUSE_KINDS = {m.NewOrder: 1, m.CancelRequest: 2, m.AmendRequest: 5}  # the core's CMD_PLACE, CMD_CANCEL, CMD_AMEND
CAUSE_NAMES = {1: "order", 2: "cancel", 5: "amend"}


def _cause_id(cause: m.Msg) -> str:
    return f"{CAUSE_NAMES[_CAUSE_KINDS[type(cause)]]}:{cause.order_id}"  # type: ignore[attr-defined]
