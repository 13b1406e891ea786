"""The matcher's WAL records, binary: one record per consumed batch, the inputs as the core consumes them.

Why: replaying a WAL of JSON inputs decoded every input again with msgspec and parsed its decimal
strings (~15 us per input with the rest of the replay); the runner has decoded each input once
already, so it logs the result. The `orders` topic stays JSON (inspection, schema validation).

Record (version 2), all little-endian:
    i32 MARKER (-2) | u32 rows | u32 strings_len | strings | rows x COLUMNS x i64
`strings` is msgpack of [symbols, client_order_ids, trace_ids, cause_ids]: the symbol names this
record uses (the `symbol` column indexes them, so a catalog reordered between runs changes nothing),
then one string per row. `cause_ids[i]` is "" when the events' causation id is the usual
"<kind>:<order id>" and the id itself when that cannot be rebuilt from the column (an order id
outside a signed 64-bit integer, stored as -1 like the core's Batch does). The integers are one i64
array, row after row (one struct pack per input when writing); reading takes each column with one
strided copy and hands it to the core's Batch with one more, so no per-input Python runs.
A row whose input was malformed (sent to dead.letters) has kind SKIPPED: replay only advances its
source offset. Version 1 records (source partition i32 >= 0 | offset i64 | the raw JSON input) are
still read: their first four bytes are a partition, never negative.
The WAL layer (wal.py) adds the length and crc32 of each record and handles torn tails.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass
from typing import Any

import msgspec
from librt.vecs import vec
from mypy_extensions import i64

MARKER = -2
HEAD = struct.Struct("<iII")
ROW = struct.Struct("<15q")  # one row of COLUMNS
V1_HEAD = struct.Struct("<iq")  # version 1: source partition, source offset, then the raw input
COLUMNS = ("partition", "offset", "symbol", "kind", "order_id", "account_id", "side", "order_type", "tif",
           "price_ticks", "qty_lots", "stp", "reduce_only", "ts_ns", "input_id")
COL = {name: i for i, name in enumerate(COLUMNS)}
BATCH_COLUMNS = COLUMNS[3:]  # the core Batch's integer fields, in this order
SKIPPED = 0  # kind of a malformed input: it was dead-lettered, only its position counts
MAX_ROWS = 100_000
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
_STRINGS = msgspec.msgpack.Decoder(tuple[list[str], list[str], list[str], list[str]])
_ENCODE = msgspec.msgpack.Encoder()
_VEC_I64 = vec[i64]


def is_binary(record: bytes) -> bool:
    return HEAD.unpack_from(record)[0] == MARKER


def fit(value: int) -> int:
    """The core Batch's rule for a number outside a signed 64-bit integer: -1, which every field refuses."""
    return value if I64_MIN <= value <= I64_MAX else -1


class Rows:
    """Builds one record. `add` takes the core's integers; numbers are fitted as the Batch fits them."""

    def __init__(self) -> None:
        self.ints = bytearray()  # row after row: partition, offset, symbol index, then BATCH_COLUMNS
        self.symbols: dict[str, int] = {}
        self.client_order_ids: list[str] = []
        self.trace_ids: list[str] = []
        self.cause_ids: list[str] = []

    def __len__(self) -> int:
        return len(self.trace_ids)

    def add(self, partition: int, offset: int, symbol: str, fields: tuple[int, ...], client_order_id: str,
            trace_id: str, cause_id: str) -> None:
        """`fields`: kind .. input_id in BATCH_COLUMNS order; `cause_id` "" unless it cannot be rebuilt."""
        index = self.symbols.get(symbol)
        if index is None:
            index = self.symbols[symbol] = len(self.symbols)
        try:
            self.ints += ROW.pack(partition, offset, index, *fields)
        except struct.error:  # a number past a signed 64-bit integer (or a wrong field count: raises again)
            self.ints += ROW.pack(partition, offset, index, *map(fit, fields))
        self.client_order_ids.append(client_order_id)
        self.trace_ids.append(trace_id)
        self.cause_ids.append(cause_id)

    def skipped(self, partition: int, offset: int) -> None:
        self.add(partition, offset, "", (SKIPPED,) + (0,) * (len(BATCH_COLUMNS) - 1), "", "", "")

    def encode(self) -> bytes:
        assert 0 < len(self) <= MAX_ROWS, "a WAL record holds 1 .. MAX_ROWS inputs"
        strings = _ENCODE.encode([list(self.symbols), self.client_order_ids, self.trace_ids, self.cause_ids])
        return b"".join([HEAD.pack(MARKER, len(self), len(strings)), strings, self.ints])


@dataclass
class Part:
    """One symbol's rows of a record: its integer columns (BATCH_COLUMNS order) and its strings."""

    symbol: str
    columns: list[array]  # type: ignore[type-arg]
    client_order_ids: list[str]
    trace_ids: list[str]
    cause_ids: list[str]

    @property
    def kinds(self) -> array:  # type: ignore[type-arg]
        return self.columns[0]

    @property
    def order_ids(self) -> array:  # type: ignore[type-arg]
        return self.columns[1]


@dataclass
class Decoded:
    partitions: array  # type: ignore[type-arg]
    offsets: array  # type: ignore[type-arg]
    parts: list[Part]


def decode(record: bytes) -> Decoded:
    """A version-2 record split per symbol, in row order within each symbol; skipped rows left out.
    Raises ValueError when the record is not a well-formed version-2 record (its crc matched, so
    that is a bug or a foreign file, never a torn write)."""
    marker, rows, strings_len = HEAD.unpack_from(record)
    start = HEAD.size + strings_len
    if marker != MARKER or not 0 < rows <= MAX_ROWS or len(record) != start + 8 * rows * len(COLUMNS):
        raise ValueError("not a version-2 matcher WAL record")
    symbols, coids, traces, causes = _STRINGS.decode(memoryview(record)[HEAD.size:start])
    if not len(coids) == len(traces) == len(causes) == rows:
        raise ValueError("matcher WAL record: string columns do not match its rows")
    ints = array("q")
    ints.frombytes(memoryview(record)[start:])
    cols = [ints[i::len(COLUMNS)] for i in range(len(COLUMNS))]  # one strided copy per column
    symbol_col, kinds = cols[COL["symbol"]], cols[COL["kind"]]
    if len(symbols) == 1 and kinds.count(SKIPPED) == 0:  # the common case: every row, one symbol
        parts = [Part(symbols[0], cols[3:], coids, traces, causes)]
    else:
        parts = [_select(symbol, cols, coids, traces, causes,
                         [i for i in range(rows) if symbol_col[i] == index and kinds[i] != SKIPPED])
                 for index, symbol in enumerate(symbols)]
        parts = [part for part in parts if part.trace_ids]
    return Decoded(cols[0], cols[1], parts)


def _select(symbol: str, cols: list[array], coids: list[str], traces: list[str], causes: list[str],  # type: ignore[type-arg]
            rows: list[int]) -> Part:
    return Part(symbol, [array("q", [col[i] for i in rows]) for col in cols[3:]], [coids[i] for i in rows],
                [traces[i] for i in rows], [causes[i] for i in rows])


def batch(core: Any, part: Part) -> Any:
    """The core Batch of one part: each integer column copied once (a memcpy) into the Batch's native array."""
    out = core.Batch()
    for name, col in zip(BATCH_COLUMNS, part.columns, strict=True):
        setattr(out, name, _VEC_I64(col))
    out.client_order_id = list(part.client_order_ids)
    out.count = len(part.trace_ids)
    return out


def rows(record: bytes) -> int:
    """How many inputs a record holds (a version-1 record: one)."""
    marker, count, _ = HEAD.unpack_from(record) if len(record) >= HEAD.size else (0, 1, 0)
    return count if marker == MARKER else 1
