"""Topic plumbing shared by the Quix processors: raw bytes in, routed outputs, dead letters.

A processor's step returns a list of `routed(...)` dicts; `to_topics` produces each
to its topic with its key, inside the processor's exactly-once transaction.
Inputs are read as raw bytes and decoded with the contracts codec, so a malformed
message becomes a dead letter instead of an exception that stops the processor.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from prometheus_client import Counter
from quixstreams import Application
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import Topic
from quixstreams.models.serializers import Serializer

from perpline.config import topic_map
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.pipelines.app import PROCESSED

log = logging.getLogger("perpline.pipelines")


class PayloadSerializer(Serializer):
    """Writes the pre-encoded payload of a routed output."""

    def __call__(self, value: Any, ctx: Any = None) -> bytes:
        payload: bytes = value["v"]
        return payload


def routed(logical_topic: str, key: str, msg: msgspec.Struct) -> dict[str, Any]:
    return {"t": logical_topic, "k": key, "v": codec.encode(msg)}


def input_topic(app: Application, logical: str) -> Topic:
    physical = topic_map()[logical]
    PROCESSED.labels(app.config.consumer_group, physical)  # exported from the start (at 0)
    return app.topic(physical, value_deserializer="bytes", key_deserializer="str")


def output_topics(app: Application, logicals: list[str]) -> dict[str, Topic]:
    names = topic_map()
    return {t: app.topic(names[t], value_serializer=PayloadSerializer(), key_serializer="str") for t in logicals}


def to_topics(sdf: StreamingDataFrame, outs: dict[str, Topic]) -> StreamingDataFrame:
    """Produce every routed output of `sdf` (expanded one per row) to its own topic and key."""
    return sdf.to_topic(lambda value, key, ts, headers: outs[value["t"]], key=lambda value: value["k"])


def decode_or_dead_letter(source: str, logical_topic: str, raw: bytes) -> tuple[Any, dict[str, Any] | None]:
    """(message, None) or (None, a routed dead letter) for undecodable input."""
    try:
        return codec.decode(logical_topic, raw), None
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as exc:
        return None, dead_letter(source, logical_topic, raw, str(exc))


DEAD_LETTERS = Counter("perpline_dead_letters_total", "inputs sent to dead.letters by a processor", ["source"])


def dead_letter(source: str, logical_topic: str, raw: bytes | None, error: str) -> dict[str, Any]:
    DEAD_LETTERS.labels(source).inc()
    log.error("dead letter", extra={"source": source, "topic": logical_topic, "error": error[:500]})
    letter = m.DeadLetter(trace_id="", causation_id=f"{logical_topic}", ts_ms=int(time.time() * 1000), source=source,
                          topic=logical_topic, partition=-1, offset=-1, error=error[:1000],
                          payload=(raw or b"")[:10000].decode("utf-8", "replace"))
    return routed("dead.letters", source, letter)
