"""Topic plumbing shared by the Quix processors: topic handles, raw bytes in, routed outputs, dead letters.

A processor's step returns a list of `routed(...)` dicts; `to_topics` produces each
to its topic with its key, inside the processor's transaction (or at least once).
Inputs are read as raw bytes and decoded with the contracts codec, so a malformed
message becomes a dead letter instead of an exception that stops the processor.

Topic handles: our topics exist before a processor starts (created from topics.yaml by the
broker launcher or `perpline up`). `input_topic` / `output_topics` refuse a topic that is not
in topics.yaml or not on the broker (TopicMissing) instead of letting Quix create it with
defaults. Quix still creates its own changelog topics: they inherit retention.ms /
retention.bytes from the input topic's configs, which Quix reads from the broker (KeyError
'retention.ms' if a topic was created without them).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from confluent_kafka.admin import AdminClient
from prometheus_client import Counter
from quixstreams import Application, message_context
from quixstreams.context import MessageContextNotSetError
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import Topic, TopicConfig
from quixstreams.models.serializers import Serializer

from perpline.config import kafka_config
from perpline.contracts import codec, topics
from perpline.contracts import messages as m
from perpline.contracts.dead_letters import dead_letter as build_dead_letter

log = logging.getLogger("perpline.pipelines")
PROCESSED = Counter("perpline_processor_messages_total", "inputs a processor has finished (every step ran)",
                    ["group", "topic"])
DEAD_LETTERS = Counter("perpline_dead_letters_total", "inputs sent to dead.letters by a processor", ["source"])
ADMIN_TIMEOUT_S = 10.0


class TopicMissing(RuntimeError):
    """A topic is absent from topics.yaml or from the broker: the broker launcher or `perpline up` creates them."""


# --- topic handles ------------------------------------------------------------------------------


class PayloadSerializer(Serializer):
    """Writes the pre-encoded payload of a routed output."""

    def __call__(self, value: Any, ctx: Any = None) -> bytes:
        payload: bytes = value["v"]
        return payload


def input_topic(app: Application, logical: str) -> Topic:
    """The Quix Topic a processor reads `logical` from: raw bytes (decoded by the step), str keys."""
    (config,) = _checked_configs(app, [logical]).values()
    physical = topics.physical(logical)
    PROCESSED.labels(app.config.consumer_group, physical)  # exported from the start (at 0)
    return app.topic(physical, value_deserializer="bytes", key_deserializer="str", config=config)


def output_topics(app: Application, logicals: list[str]) -> dict[str, Topic]:
    """Logical name -> the Quix Topic `to_topics` produces routed outputs to."""
    configs = _checked_configs(app, logicals)
    return {t: app.topic(topics.physical(t), value_serializer=PayloadSerializer(), key_serializer="str",
                         config=configs[t]) for t in logicals}


def _checked_configs(app: Application, logicals: list[str]) -> dict[str, TopicConfig]:
    """The create config of each topic (topics.yaml's: nothing is made with defaults), after checking
    that each is declared in topics.yaml and exists on the broker."""
    unknown = [t for t in logicals if t not in topics.ALL]
    if unknown:
        raise TopicMissing(f"topics {unknown} are not in topics.yaml")
    bootstrap = bootstrap_of(app)
    missing = sorted(set(topics.physical(t) for t in logicals) - broker_topics(bootstrap))
    if missing:
        raise TopicMissing(f"topics {missing} do not exist on {bootstrap}")
    specs = {t: topics.spec(t) for t in logicals}
    return {t: TopicConfig(num_partitions=s.partitions, replication_factor=s.replication_factor,
                           extra_config=dict(s.configs)) for t, s in specs.items()}


def broker_topics(bootstrap: str) -> set[str]:
    admin = AdminClient(kafka_config(bootstrap, **{"socket.timeout.ms": int(ADMIN_TIMEOUT_S * 1000)}))
    return set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)


def bootstrap_of(app: Application) -> str:
    address = app.config.broker_address
    return address if isinstance(address, str) else str(address.bootstrap_servers)


# --- routed outputs ------------------------------------------------------------------------------


def routed(logical_topic: str, key: str, msg: msgspec.Struct) -> dict[str, Any]:
    return {"t": logical_topic, "k": key, "v": codec.encode(msg)}


def to_topics(sdf: StreamingDataFrame, outs: dict[str, Topic]) -> StreamingDataFrame:
    """Produce every routed output of `sdf` (expanded one per row) to its own topic and key."""
    return sdf.to_topic(lambda value, key, ts, headers: outs[value["t"]], key=lambda value: value["k"])


# --- dead letters --------------------------------------------------------------------------------


def decode_or_dead_letter(source: str, logical_topic: str, raw: bytes) -> tuple[Any, dict[str, Any] | None]:
    """(message, None) or (None, a routed dead letter) for undecodable input."""
    try:
        return codec.decode(logical_topic, raw), None
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as exc:
        return None, dead_letter(source, logical_topic, raw, str(exc))


def dead_letter(source: str, logical_topic: str, raw: bytes | None, error: str) -> dict[str, Any]:
    """The routed dead letter for the input a Quix step is processing (its position from the message context)."""
    topic, partition, offset = _position(logical_topic)
    return routed(topics.DEAD_LETTERS, source, noted(build_dead_letter(source, topic, partition, offset, raw, error)))


def noted(letter: m.DeadLetter) -> m.DeadLetter:
    """Count and log a letter about to be sent."""
    DEAD_LETTERS.labels(letter.source).inc()
    log.error("dead letter", extra={"source": letter.source, "topic": letter.topic, "partition": letter.partition,
                                    "offset": letter.offset, "error": letter.error})
    return letter


def _position(logical_topic: str) -> tuple[str, int, int]:
    """(topic, partition, offset) of the input being processed; outside a Quix step (a unit test) the
    topic's name on the broker and -1, -1."""
    try:
        ctx = message_context()
    except MessageContextNotSetError:
        return topics.physical(logical_topic), -1, -1
    return ctx.topic, ctx.partition, ctx.offset
