"""The one Quix Streams Application factory, topic helper and dead-letter routing.

    app = make_app("perpline-risk", state_dir=...)     # broker from PERPLINE_KAFKA_BOOTSTRAP
    sdf = app.dataframe(topic(app, topics.POSITIONS))  # a topic of topics.yaml, JSON values
    ... raise Malformed("why") in a step -> the input goes to dead.letters, processing goes on

What the embedded broker (Tansu) needs, kept here in one place (docs/broker-notes.md):
- our topics exist before a processor starts (created from topics.yaml by the broker
  launcher or `perpline up`); `topic()` refuses a missing one instead of letting Quix
  create it with defaults. Quix still creates its own changelog topics: they inherit
  retention.ms / retention.bytes from the input topic's configs, which Quix reads from
  the broker (KeyError 'retention.ms' if a topic was created without them).
- session.timeout.ms 6000: a group join takes about half of it;
- a short commit interval: with exactly-once, outputs become visible downstream only when
  the checkpoint commits their transaction, so the interval is the latency floor;
- at-least-once producers need batch.num.messages=1 on Tansu.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

import msgspec
from confluent_kafka.admin import AdminClient
from prometheus_client import Counter
from quixstreams import Application
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models import Row, Topic, TopicConfig
from quixstreams.models.serializers import DeserializerType, Serializer
from quixstreams.models.serializers.exceptions import SerializationError

from perpline.config import fetch_config, kafka_config, settings
from perpline.contracts import messages as m
from perpline.contracts import topics

log = logging.getLogger("perpline.pipelines")
PROCESSED = Counter("perpline_processor_messages_total", "inputs a processor has finished (every step ran)",
                    ["group", "topic"])
ERRORS = Counter("perpline_processor_errors_total", "errors that stopped a processor (it restarts from its last "
                 "checkpoint); inputs skipped to dead.letters count in perpline_dead_letters_total", ["group"])

COMMIT_INTERVAL_S = float(os.environ.get("PERPLINE_COMMIT_INTERVAL_S", "0.1"))
# How long Quix's loop waits for an input before it looks at the checkpoint again: the transaction
# holding a result commits (becomes visible to read_committed readers) only then. Quix's default,
# 1 s, held every answer of an idle processor for up to a second.
POLL_TIMEOUT_S = float(os.environ.get("PERPLINE_POLL_TIMEOUT_S", "0.02"))
SESSION_TIMEOUT_MS = 6000  # Tansu: a group join takes about half of it
HEARTBEAT_INTERVAL_MS = 1000  # < session / 3
TRANSACTION_TIMEOUT_MS = 15000  # bounds how long a crashed instance's open transaction blocks readers
REQUEST_TIMEOUT_S = 30.0  # Quix admin requests and topic creation
ADMIN_TIMEOUT_S = 10.0
INSTANCE_ENV = "PERPLINE_INSTANCE_ID"  # unique per running instance of one processor
MAX_DEAD_PAYLOAD = 10_000  # bytes of the raw input kept in a dead letter
MAX_DEAD_ERROR = 1_000

Guarantee = Literal["exactly-once", "at-least-once"]


class Malformed(Exception):
    """Raise from a step for an input that can never be processed (bad shape, wrong key).

    The input goes to dead.letters and the processor moves on. Raise it before writing
    state: Quix keeps the row's state writes even when the error is suppressed.
    """


# --- the application --------------------------------------------------------------------------


def make_app(consumer_group: str, *, state_dir: Path | None = None, processing_guarantee: Guarantee = "exactly-once",
             auto_offset_reset: Literal["earliest", "latest"] = "earliest", dead_letter_source: str | None = None,
             on_write_path: bool = True, **overrides: Any) -> Application:
    """A Quix Application for one processor, configured for Tansu and Redpanda alike.

    The consumer group (and so the transactional and changelog names) gets PERPLINE_TOPIC_PREFIX.
    Undeserializable inputs and `Malformed` raised in a step become dead letters with source
    `dead_letter_source` (default: the consumer group); any other error stops the processor,
    which restarts from its last checkpoint. `overrides` are Application keyword arguments;
    consumer_extra_config / producer_extra_config are merged into ours.
    """
    cfg = settings()
    group = f"{cfg.topic_prefix}{consumer_group}"
    letters = DeadLetters(dead_letter_source or consumer_group, group)
    kwargs: dict[str, Any] = {
        # with the security settings: Quix's consumer, producer and admin client all connect through it
        "broker_address": ConnectionConfig.from_librdkafka_dict(kafka_config(cfg.kafka_bootstrap)),
        "consumer_group": group,
        "processing_guarantee": processing_guarantee,
        "auto_offset_reset": auto_offset_reset,
        "commit_interval": COMMIT_INTERVAL_S,
        "consumer_poll_timeout": POLL_TIMEOUT_S,
        "state_dir": str(state_dir or cfg.data_dir / "state" / consumer_group),
        "on_consumer_error": letters.on_consumer_error,
        "on_processing_error": letters.on_processing_error,
        "on_message_processed": lambda topic_name, _partition, _offset: PROCESSED.labels(group, topic_name).inc(),
        "loglevel": "WARNING",
        "request_timeout": REQUEST_TIMEOUT_S,
        "topic_create_timeout": REQUEST_TIMEOUT_S,
    }
    consumer_extra = {**_consumer_config(on_write_path), **overrides.pop("consumer_extra_config", {})}
    producer_extra = {**_producer_config(processing_guarantee), **overrides.pop("producer_extra_config", {})}
    if processing_guarantee == "exactly-once":
        producer_extra.setdefault("transactional.id", transactional_id(kwargs["consumer_group"]))
    kwargs.update(overrides, consumer_extra_config=consumer_extra, producer_extra_config=producer_extra)
    app = Application(**kwargs)
    letters.attach(app)
    return app


def _consumer_config(on_write_path: bool) -> dict[str, Any]:
    # fetch_config: a short fetch wait on the write path (librdkafka's 500 ms default held each Quix hop
    # ~200 ms on the embedded broker), a longer one elsewhere (idle fetches cost the broker CPU)
    return {"session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            "isolation.level": "read_committed", **fetch_config(on_write_path)}


def _producer_config(guarantee: Guarantee) -> dict[str, Any]:
    extra: dict[str, Any] = {"linger.ms": 1}  # Quix already uses murmur2, as perpline.config.producer_config
    if guarantee == "exactly-once":
        extra["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
    else:  # one record per batch: after a multi-record batch Tansu reports a high watermark below the end
        # of the partition, so Quix's recovery from a changelog would stop short of the last state writes
        # (docs/broker-notes.md); idempotent, so a retried batch is never written twice
        extra["batch.num.messages"] = 1
        extra["enable.idempotence"] = True
    return extra


def transactional_id(consumer_group: str) -> str:
    """A transactional.id stable across restarts of one instance: "<group>-<PERPLINE_INSTANCE_ID>".

    Quix's default is a fresh UUID per process. After a crash that leaves the dead process's
    transaction open for ever on Tansu (it never times transactions out), and read_committed
    readers of every partition it wrote stop there. Re-using the id ends that transaction when
    the instance restarts (on Kafka/Redpanda it also aborts it at once instead of after
    transaction.timeout.ms). Every concurrently running instance of one processor needs its own
    PERPLINE_INSTANCE_ID (the pod name in Kubernetes), or they fence each other.
    """
    return f"{consumer_group}-{os.environ.get(INSTANCE_ENV, '0') or '0'}"


def bootstrap_of(app: Application) -> str:
    address = app.config.broker_address
    return address if isinstance(address, str) else str(address.bootstrap_servers)


# --- topics -------------------------------------------------------------------------------------


class JsonSerializer(Serializer):
    """JSON with msgspec: Structs, dicts, lists, str/int; bytes are passed through as pre-encoded."""

    _encoder = msgspec.json.Encoder()

    def __call__(self, value: Any, ctx: Any = None) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        try:
            return self._encoder.encode(value)
        except (TypeError, msgspec.EncodeError) as exc:
            raise SerializationError(str(exc)) from exc


class TopicMissing(RuntimeError):
    """A topic of topics.yaml is absent on the broker: the broker launcher or `perpline up` creates them."""


def topic(app: Application, name: str, *, value_deserializer: DeserializerType = "json",
          key_deserializer: DeserializerType = "str",
          must_exist: bool = True) -> Topic:
    """Quix Topic for logical topic `name` of topics.yaml (prefix applied), JSON values, str keys.

    Values are produced with `JsonSerializer` (msgspec Structs or dicts, or pre-encoded bytes).
    value_deserializer "json" gives dicts; "bytes" gives the raw payload to decode with the
    contracts codec. The create config is the YAML's, so nothing is ever made with defaults.
    """
    spec = topics.spec(name)
    physical = spec.physical()
    if must_exist and physical not in _broker_topics(bootstrap_of(app)):
        raise TopicMissing(f"topic {physical} does not exist on {bootstrap_of(app)}")
    config = TopicConfig(num_partitions=spec.partitions, replication_factor=spec.replication_factor,
                         extra_config=dict(spec.configs))
    return app.topic(physical, value_deserializer=value_deserializer, key_deserializer=key_deserializer,
                     value_serializer=JsonSerializer(), key_serializer="str", config=config)


def _broker_topics(bootstrap: str) -> set[str]:
    admin = AdminClient(kafka_config(bootstrap, **{"socket.timeout.ms": int(ADMIN_TIMEOUT_S * 1000)}))
    return set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)


# --- dead letters ---------------------------------------------------------------------------------


class DeadLetters:
    """Quix error callbacks that send unprocessable inputs to dead.letters and carry on.

    Letters go through the application's own producer, so under exactly-once they commit or
    abort with the checkpoint that skipped the input (a replay after a crash re-sends them).
    Key: the source; causation_id: "<topic>:<partition>:<offset>" of the input, unique per input.
    """

    def __init__(self, source: str, group: str | None = None) -> None:
        from perpline.pipelines.io import DEAD_LETTERS  # noqa: PLC0415 (io imports this module)

        self.source = source
        self.group = group or source
        self._app: Application | None = None
        DEAD_LETTERS.labels(source)  # exported from the start (at 0), not only after the first letter
        ERRORS.labels(self.group)

    def attach(self, app: Application) -> None:
        self._app = app

    def on_consumer_error(self, exc: Exception, message: Any, logger: logging.Logger) -> bool:
        if message is None or message.error() is not None or not isinstance(exc, SerializationError):
            log.error("consumer error", extra={"error": repr(exc)})
            ERRORS.labels(self.group).inc()
            return False  # a broker / client error: stop, restart from the checkpoint
        self.send(message.topic(), message.partition(), message.offset(), message.value(), f"undecodable: {exc}")
        return True

    def on_processing_error(self, exc: Exception, row: Row | None, logger: logging.Logger) -> bool:
        if row is None or not isinstance(exc, Malformed):
            log.error("processing error", extra={"error": repr(exc)}, exc_info=exc)
            ERRORS.labels(self.group).inc()
            return False  # a bug: stop, restart from the checkpoint
        self.send(row.topic, row.partition, row.offset, row.value, f"malformed: {exc}")
        return True

    def send(self, src_topic: str, partition: int, offset: int, payload: Any, error: str) -> None:
        if self._app is None:
            raise RuntimeError("DeadLetters not attached to an Application")
        from perpline.pipelines.io import DEAD_LETTERS  # noqa: PLC0415 (io imports this module)

        DEAD_LETTERS.labels(self.source).inc()
        letter = dead_letter(self.source, src_topic, partition, offset, payload, error)
        log.error("dead letter", extra={"source": self.source, "topic": src_topic, "partition": partition,
                                        "offset": offset, "error": error[:MAX_DEAD_ERROR]})
        producer = self._app._producer  # noqa: SLF001 (the row producer: inside the EOS transaction)
        producer.produce(topic=topics.physical(topics.DEAD_LETTERS), key=self.source.encode(),
                         value=msgspec.json.encode(letter))


def dead_letter(source: str, src_topic: str, partition: int, offset: int, payload: Any,
                error: str) -> m.DeadLetter:
    """The DeadLetter message for one input (payload: raw bytes or an already decoded value)."""
    raw = _raw(payload)
    return m.DeadLetter(trace_id="", causation_id=f"{src_topic}:{partition}:{offset}", ts_ms=int(time.time() * 1000),
                        source=source, topic=src_topic, partition=partition, offset=offset,
                        error=error[:MAX_DEAD_ERROR], payload=raw[:MAX_DEAD_PAYLOAD].decode("utf-8", "replace"))


def _raw(payload: Any) -> bytes:
    if payload is None:
        return b""
    try:
        return JsonSerializer()(payload)
    except SerializationError:
        return repr(payload).encode()
