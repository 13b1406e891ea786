"""Talking to any Kafka-API broker: readiness, topic creation from topics.yaml, the ready line.

Used by both embedded brokers' launchers (perpline/broker/embedded.py, perpline/broker/tansu.py), by
`perpline up` against an external broker (Redpanda in production, through PERPLINE_KAFKA_BOOTSTRAP)
and by the cluster provisioning Job.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time

from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import Gauge

from perpline.config import kafka_config
from perpline.contracts import topics as t

log = logging.getLogger("perpline.broker")

ADMIN_TIMEOUT_S = 10.0  # one admin request
CONNECT_TIMEOUT_S = 1.0  # one TCP probe

BROKER_UP = Gauge("perpline_broker_up", "1 while the embedded broker answers, else 0")
BROKER_TOPICS = Gauge("perpline_broker_topics", "topics of topics.yaml present on the broker")


class BrokerError(RuntimeError):
    """The broker did not start, died, or its topics disagree with topics.yaml."""


# --- talking to any Kafka-API broker -----------------------------------------------------


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient(kafka_config(bootstrap, **{"socket.timeout.ms": int(ADMIN_TIMEOUT_S * 1000),
                                                  "socket.connection.setup.timeout.ms": int(ADMIN_TIMEOUT_S * 1000)}))


def partition_counts(bootstrap: str, timeout_s: float = ADMIN_TIMEOUT_S) -> dict[str, int]:
    """Topic name -> partition count, from the broker's metadata."""
    metadata = _admin(bootstrap).list_topics(timeout=timeout_s)
    return {name: len(meta.partitions) for name, meta in metadata.topics.items()}


def existing_topics(bootstrap: str) -> set[str]:
    return set(partition_counts(bootstrap))


def topics_ready(bootstrap: str) -> bool:
    """True when every topic of topics.yaml exists (a readiness probe: never raises)."""
    if not _port_open(bootstrap):  # no librdkafka "Connection refused" lines on the console before it listens
        return False
    try:
        return {s.physical() for s in t.specs().values()} <= existing_topics(bootstrap)
    except Exception:  # noqa: BLE001 (not reachable yet: not ready)
        return False


def _port_open(bootstrap: str) -> bool:
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def wait_broker(bootstrap: str, timeout_s: float, child: subprocess.Popen[bytes] | None = None) -> float:
    """Block until the broker answers a metadata request; returns the seconds waited.

    Raises TimeoutError after `timeout_s`, BrokerError at once if `child` exits meanwhile.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        if child is not None and child.poll() is not None:
            raise BrokerError(f"broker exited with code {child.returncode} before answering")
        remaining = deadline - time.monotonic()
        if _port_open(bootstrap):  # probe TCP first: no librdkafka error spam before it listens
            try:
                partition_counts(bootstrap, timeout_s=max(0.5, min(ADMIN_TIMEOUT_S, remaining)))
                return time.monotonic() - started
            except Exception as exc:  # noqa: BLE001 (KafkaException: not answering yet)
                last = exc
        else:
            last = ConnectionRefusedError(bootstrap)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"broker at {bootstrap} not answering after {timeout_s:.0f} s: {last}")
        time.sleep(0.05)


def ensure_topics(bootstrap: str, topic_prefix: str | None = None) -> list[str]:
    """Create every topic of topics.yaml that is missing, with its explicit configs.

    Idempotent: existing topics are kept (also when created concurrently). Raises BrokerError
    if an existing topic has fewer partitions than specified (keys would map differently).
    Returns the physical names created.
    """
    wanted = {s.physical(topic_prefix): s for s in t.specs().values()}
    have = partition_counts(bootstrap)
    _check_partitions({n: s for n, s in wanted.items() if n in have}, have)
    missing = {n: s for n, s in wanted.items() if n not in have}
    if missing:
        _create(bootstrap, missing)
    _await_metadata(bootstrap, wanted)
    return sorted(missing)


def _create(bootstrap: str, missing: dict[str, t.TopicSpec]) -> None:
    admin = _admin(bootstrap)  # keep a reference: the futures die with the client
    new = [NewTopic(name, num_partitions=s.partitions, replication_factor=s.replication_factor,
                    config=dict(s.configs)) for name, s in missing.items()]
    futures = admin.create_topics(new, request_timeout=ADMIN_TIMEOUT_S, operation_timeout=ADMIN_TIMEOUT_S)
    for name, future in futures.items():
        try:
            future.result(timeout=ADMIN_TIMEOUT_S)
            log.info("topic created", extra={"topic": name, "partitions": missing[name].partitions})
        except Exception as exc:  # created concurrently by another starter is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"creating topic {name}: {exc}") from exc


def _check_partitions(existing: dict[str, t.TopicSpec], have: dict[str, int]) -> None:
    wrong = {n: (have[n], s.partitions) for n, s in existing.items() if have[n] != s.partitions}
    if wrong:
        raise BrokerError(f"topics with partitions other than topics.yaml (have, want): {wrong}")


def _await_metadata(bootstrap: str, wanted: dict[str, t.TopicSpec]) -> None:
    """Wait until metadata shows every wanted topic (Redpanda propagates creation asynchronously)."""
    deadline = time.monotonic() + ADMIN_TIMEOUT_S
    while True:
        have = partition_counts(bootstrap)
        absent = sorted(set(wanted) - set(have))
        if not absent:
            _check_partitions(wanted, have)
            BROKER_TOPICS.set(len(wanted))
            return
        if time.monotonic() >= deadline:
            raise BrokerError(f"topics not visible after creation: {absent}")
        time.sleep(0.1)


def announce_ready(bootstrap: str, created: list[str], seconds: float) -> None:
    ready = {"event": "broker_ready", "bootstrap": bootstrap, "topics_created": len(created),
             "seconds": round(seconds, 3), "pid": os.getpid()}
    print(json.dumps(ready), flush=True)
    log.info("broker ready", extra={k: v for k, v in ready.items() if k != "event"})
