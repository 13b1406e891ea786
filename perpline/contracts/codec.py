"""The JSON codec for every topic: one encoder, one decoder per topic's union."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import msgspec

from perpline.contracts import messages as m

MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB: a larger message is malformed by definition

_encoder = msgspec.json.Encoder()


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


@lru_cache(maxsize=16)
def _decoder(topic: str) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(m.TOPIC_TYPES[topic])


def decode(topic: str, data: bytes) -> Any:
    """Decode a message of `topic`; raises msgspec.ValidationError/DecodeError or ValueError."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return _decoder(topic).decode(data)


def to_builtins(msg: msgspec.Struct) -> Any:
    return msgspec.to_builtins(msg)


def from_builtins(topic: str, obj: Any) -> Any:
    return msgspec.convert(obj, m.TOPIC_TYPES[topic])
