"""The one Quix Streams Application factory, and its error callbacks.

    app = make_app("perpline-accounts", state_dir=...)        # broker from PERPLINE_KAFKA_BOOTSTRAP
    sdf = app.dataframe(io.input_topic(app, "account.commands"))  # topic handles: perpline.pipelines.io

What the brokers need, kept here in one place (docs/broker-notes.md):
- our topics exist before a processor starts: perpline.pipelines.io refuses a missing one;
- session.timeout.ms 6000: a dead member is noticed after it (on Tansu a join took about half);
- a short commit interval: with exactly-once, outputs become visible downstream only when
  the checkpoint commits their transaction, so the interval is the latency floor;
- at-least-once producers need batch.num.messages=1 on Tansu (PERPLINE_BROKER=tansu) only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from prometheus_client import Counter
from quixstreams import Application
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models import Row
from quixstreams.models.serializers.exceptions import SerializationError

from perpline.broker.launch import engine as broker_engine
from perpline.config import Guarantee, fetch_config, kafka_config, settings
from perpline.contracts import codec, topics
from perpline.contracts.dead_letters import dead_letter
from perpline.obs import counter_by_label
from perpline.pipelines.checkpoints import commit_when_caught_up
from perpline.pipelines.io import DEAD_LETTERS, PROCESSED, noted

log = logging.getLogger("perpline.pipelines")
ERRORS = Counter("perpline_processor_errors_total", "errors that stopped a processor (it restarts from its last "
                 "checkpoint); inputs skipped to dead.letters count in perpline_dead_letters_total", ["group"])

COMMIT_INTERVAL_S = float(os.environ.get("PERPLINE_COMMIT_INTERVAL_S", "0.02"))
# How long Quix's loop waits for an input before it looks at the checkpoint again: the transaction
# holding a result commits (becomes visible to read_committed readers) only then. Quix's default,
# 1 s, held every answer of an idle processor for up to a second.
POLL_TIMEOUT_S = float(os.environ.get("PERPLINE_POLL_TIMEOUT_S", "0.02"))
SESSION_TIMEOUT_MS = 6000  # Tansu: a group join takes about half of it
HEARTBEAT_INTERVAL_MS = 1000  # < session / 3
TRANSACTION_TIMEOUT_MS = 15000  # bounds how long a crashed instance's open transaction blocks readers
REQUEST_TIMEOUT_S = 30.0  # Quix admin requests and topic creation
INSTANCE_ENV = "PERPLINE_INSTANCE_ID"  # unique per running instance of one processor


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
    processed = counter_by_label(PROCESSED, group)
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
        "on_message_processed": lambda topic_name, _partition, _offset: processed(topic_name),
        "loglevel": "WARNING",
        "request_timeout": REQUEST_TIMEOUT_S,
        "topic_create_timeout": REQUEST_TIMEOUT_S,
    }
    consumer_extra = {**_consumer_config(on_write_path), **overrides.pop("consumer_extra_config", {})}
    producer_extra = {**_producer_config(processing_guarantee), **overrides.pop("producer_extra_config", {})}
    if processing_guarantee == "exactly-once":
        producer_extra.setdefault("transactional.id", transactional_id(kwargs["consumer_group"]))
    if broker_engine() != "tansu":  # static membership: a restarted instance takes its partitions back at once
        consumer_extra.setdefault("group.instance.id", transactional_id(kwargs["consumer_group"]))
    kwargs.update(overrides, consumer_extra_config=consumer_extra, producer_extra_config=producer_extra)
    app = Application(**kwargs)
    letters.attach(app)
    if on_write_path:  # an answer waits for its outputs; elsewhere the interval batches the work
        commit_when_caught_up(app)
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
    else:  # idempotent, so a retried batch is never written twice
        extra["enable.idempotence"] = True
        if broker_engine() == "tansu":  # one record per batch (DESIGN.md's Tansu quirk; tried
            # without: after a kill the accounts processor stopped consuming and the crash session ended with a
            # tenth of its orders)
            extra["batch.num.messages"] = 1
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


# --- dead letters ---------------------------------------------------------------------------------


class DeadLetters:
    """Quix error callbacks: an input whose key cannot be decoded goes to dead.letters and processing
    goes on; any other error stops the processor (it restarts from its last checkpoint).

    Values are read as raw bytes and a step turns an undecodable one into a routed dead letter
    (perpline.pipelines.io), so only a key that is not UTF-8 fails in the consumer. Letters go
    through the application's own producer, so under exactly-once they commit or abort with the
    checkpoint that skipped the input (a replay after a crash re-sends them).
    """

    def __init__(self, source: str, group: str | None = None) -> None:
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
        log.error("processing error", extra={"error": repr(exc)}, exc_info=exc)
        ERRORS.labels(self.group).inc()
        return False  # a bug (a malformed input is a routed dead letter, never an exception): stop

    def send(self, src_topic: str, partition: int, offset: int, raw: bytes | None, error: str) -> None:
        if self._app is None:
            raise RuntimeError("DeadLetters not attached to an Application")
        letter = noted(dead_letter(self.source, src_topic, partition, offset, raw, error))
        producer = self._app._producer  # noqa: SLF001 (the row producer: inside the EOS transaction)
        producer.produce(topic=topics.physical(topics.DEAD_LETTERS), key=self.source.encode(),
                         value=codec.encode(letter))
