"""The one Quix Streams Application factory for every processor.

Settings the embedded broker (Tansu) needs, kept here in one place:
- our topics are created from redpanda/topics.yaml by `perpline up` / the broker; Quix may
  create its own changelog topics, which need retention.* configs on Tansu;
- session.timeout.ms 6000: a consumer group join takes about half of it;
- a short commit interval: with exactly-once, outputs become visible downstream only
  when the checkpoint commits their transaction, so the interval is the latency floor;
- at-least-once producers need batch.num.messages=1 on Tansu.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from quixstreams import Application

from perpline.config import settings

log = logging.getLogger("perpline.pipelines")

COMMIT_INTERVAL_S = float(os.environ.get("PERPLINE_COMMIT_INTERVAL_S", "0.1"))


def _on_processing_error(exc: BaseException, row: Any, logger: Any) -> bool:
    """A bug in a step: log it loudly and stop the processor (it restarts and replays from the checkpoint)."""
    log.error("processing error", extra={"error": repr(exc)})
    return False


def make_app(consumer_group: str, *, state_dir: Path | None = None, processing_guarantee: str = "exactly-once",
             **overrides: Any) -> Application:
    cfg = settings()
    producer_extra: dict[str, Any] = {"linger.ms": 1}
    if processing_guarantee == "at-least-once":
        producer_extra["batch.num.messages"] = 1
    kwargs: dict[str, Any] = {
        "broker_address": cfg.kafka_bootstrap,
        "consumer_group": f"{cfg.topic_prefix}{consumer_group}",
        "processing_guarantee": processing_guarantee,
        "auto_offset_reset": "earliest",
        "commit_interval": COMMIT_INTERVAL_S,
        "consumer_extra_config": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                                  "isolation.level": "read_committed"},
        "producer_extra_config": producer_extra,
        "state_dir": str(state_dir or cfg.data_dir / "state" / consumer_group),
        "on_processing_error": _on_processing_error,
        "loglevel": "WARNING",
        "topic_create_timeout": 30,
    }
    kwargs.update(overrides)
    return Application(**kwargs)
