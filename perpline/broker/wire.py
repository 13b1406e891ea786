"""Kafka protocol primitives for the embedded broker: a reader and a writer of the classic encodings.

Only non-flexible request versions are advertised (VERSIONS in perpline/broker/handlers.py), so compact encodings
and tagged fields appear in one place only: ApiVersions v3 (its request header and body).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

from crc32c import crc32c as _crc32c

T = TypeVar("T")

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")

MAX_ARRAY = 1 << 20  # no request of ours carries more entries than this; a larger count is a bad request


class WireError(ValueError):
    """A request that cannot be decoded: the connection is closed (as Kafka does)."""


class Reader:
    """Reads big-endian primitives from a request body."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | memoryview, pos: int = 0) -> None:
        self.buf = memoryview(buf)
        self.pos = pos

    def _take(self, fmt: struct.Struct) -> int:
        try:
            (value,) = fmt.unpack_from(self.buf, self.pos)
        except struct.error as exc:
            raise WireError(f"truncated at {self.pos}") from exc
        self.pos += fmt.size
        return int(value)

    def i8(self) -> int:
        return self._take(_I8)

    def i16(self) -> int:
        return self._take(_I16)

    def i32(self) -> int:
        return self._take(_I32)

    def i64(self) -> int:
        return self._take(_I64)

    def boolean(self) -> bool:
        return self.i8() != 0

    def _raw(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise WireError(f"length {n} at {self.pos} past the end")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def nstring(self) -> str | None:
        n = self.i16()
        return None if n < 0 else str(self._raw(n), "utf-8")

    def string(self) -> str:
        value = self.nstring()
        if value is None:
            raise WireError("null where a string is required")
        return value

    def nbytes(self) -> bytes | None:
        n = self.i32()
        return None if n < 0 else bytes(self._raw(n))

    def array(self, item: Callable[[Reader], T]) -> list[T]:
        return self.narray(item) or []

    def narray(self, item: Callable[[Reader], T]) -> list[T] | None:
        n = self.i32()
        if n < 0:
            return None
        if n > MAX_ARRAY:
            raise WireError(f"array of {n} entries")
        return [item(self) for _ in range(n)]

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            byte = self._raw(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise WireError("varint too long")

    def compact_nstring(self) -> str | None:
        n = self.uvarint() - 1
        return None if n < 0 else str(self._raw(n), "utf-8")

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self._raw(self.uvarint())


class Writer:
    """Builds a response body from parts; `bytes()` joins them once."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def i8(self, v: int) -> Writer:
        self.parts.append(_I8.pack(v))
        return self

    def i16(self, v: int) -> Writer:
        self.parts.append(_I16.pack(v))
        return self

    def i32(self, v: int) -> Writer:
        self.parts.append(_I32.pack(v))
        return self

    def i64(self, v: int) -> Writer:
        self.parts.append(_I64.pack(v))
        return self

    def boolean(self, v: bool) -> Writer:
        return self.i8(1 if v else 0)

    def nstring(self, v: str | None) -> Writer:
        if v is None:
            return self.i16(-1)
        raw = v.encode()
        self.parts.append(_I16.pack(len(raw)))
        self.parts.append(raw)
        return self

    def nbytes(self, v: bytes | None) -> Writer:
        if v is None:
            return self.i32(-1)
        self.parts.append(_I32.pack(len(v)))
        self.parts.append(v)
        return self

    def raw(self, v: bytes) -> Writer:
        self.parts.append(v)
        return self

    def array(self, items: list[T] | None, write: Callable[[Writer, T], object]) -> Writer:
        if items is None:
            return self.i32(-1)
        self.i32(len(items))
        for item in items:
            write(self, item)
        return self

    def uvarint(self, v: int) -> Writer:
        self.parts.append(_unsigned_varint(v))
        return self

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


def _unsigned_varint(u: int) -> bytes:
    out = bytearray()
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def varint(v: int) -> bytes:
    """A signed varint (zig-zag), as record fields are encoded."""
    return _unsigned_varint(((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)


def varint_at(buf: bytes, pos: int) -> tuple[int, int]:
    """The signed varint (zig-zag) at `pos` of a record, and the position after it."""
    shift = value = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as record batches carry it (the C implementation of the crc32c package)."""
    return int(_crc32c(data))


def u32(v: int) -> bytes:
    return _U32.pack(v)
