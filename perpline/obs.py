"""Observability shared by every process: structured JSON logs with the trace id, Prometheus metrics."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import Counter, Gauge, start_http_server

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def counter_by_label(counter: Counter, *fixed: str) -> Callable[[str], None]:
    """inc() of `counter`'s child labelled (*fixed, label), the child looked up once per label.

    prometheus_client's labels() validates and joins its labels on every call: per message in a
    processor's loop it was 18 % of the ledger sink's CPU under load (py-spy, bench.load 32 pairs)."""
    children: dict[str, Any] = {}

    def inc(label: str) -> None:
        child = children.get(label)
        if child is None:
            child = children[label] = counter.labels(*fixed, label)
        child.inc()

    return inc


# msgspec rather than json.dumps: the API writes a line per request (py-spy, 32 trading pairs: the
# request log line was 7 % of the API's CPU, half of it json.dumps). Anything it cannot encode: str().
_LOG_ENCODER = msgspec.json.Encoder(enc_hook=str)


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _LOG_ENCODER.encode(out).decode()


def setup_logging(component: str, level: str | None = None) -> logging.Logger:
    # JsonFormatter writes none of a record's caller, thread or process fields: skip collecting them (the
    # logging module's documented optimisations; the caller's frame walk ran on every request's log line)
    logging._srcfile = None  # type: ignore[attr-defined]  # noqa: SLF001
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("PERPLINE_LOG_LEVEL", "INFO"))
    for noisy in ("quixstreams", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger(f"perpline.{component}")


def serve_metrics(port: int | None) -> None:
    """Serve /metrics on 127.0.0.1:port (PERPLINE_METRICS_PORT when port is None; 0 or unset = off)."""
    port = port if port is not None else int(os.environ.get("PERPLINE_METRICS_PORT", "0") or 0)
    if port:
        try:
            start_http_server(port, addr=os.environ.get("PERPLINE_METRICS_HOST", "127.0.0.1"))
        except OSError as exc:  # a taken port must not take the process down with it: run, say so
            logging.getLogger("perpline").error("metrics not served", extra={"port": port, "error": str(exc)})


# --- consumer lag, measured by each consuming process itself --------------------------------------

LAG_INTERVAL_S = 5.0
LAG_TIMEOUT_S = 2.0
CONSUMER_LAG = Gauge("perpline_consumer_lag_messages",
                     "records of a partition assigned to this consumer that it has not consumed yet: the partition's "
                     "high watermark minus the consumer's position (before its first record: where it was assigned, "
                     "else the group's committed offset)",
                     ["group", "topic", "partition"])
CONSUMER_LAG_TIMESTAMP = Gauge("perpline_consumer_lag_timestamp_seconds", "when this process last measured its lag",
                               ["group"])


class LagWatcher:
    """Exports perpline_consumer_lag_messages{group,topic,partition} for the partitions a consumer holds, every
    LAG_INTERVAL_S from a thread of its own, so a consumer whose loop is stuck shows a lag that grows.

        lag = LagWatcher("perpline-matcher"); lag.watch(consumer, partitions)   # after assign()
        lag.unwatch()                                                         # before consumer.close()

    Positions are the consumer's own: position(); before the first record of a partition, the offset it was
    assigned at (`partitions` with offsets), else its group's committed offset, else none (no series). The
    end is the larger of the broker's answer (ListOffsets) and the high watermark of the last fetch response:
    the embedded broker's ListOffsets can be low after multi-record batches (docs/broker-notes.md), Redpanda's
    is exact. unwatch() holds the watcher's lock, so no measurement runs on a consumer being closed."""

    def __init__(self, group: str, interval_s: float = LAG_INTERVAL_S) -> None:
        self.group = group
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._consumer: Any = None
        self._partitions: list[tuple[str, int]] = []
        self._starts: dict[tuple[str, int], int] = {}
        self._exported: set[tuple[str, int]] = set()
        self._thread: threading.Thread | None = None
        self._warned = False

    def watch(self, consumer: Any, partitions: list[Any]) -> None:
        with self._lock:
            self._consumer = consumer
            self._partitions = [(tp.topic, tp.partition) for tp in partitions]
            self._starts = {(tp.topic, tp.partition): tp.offset for tp in partitions if tp.offset >= 0}
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"lag-{self.group}", daemon=True)
            self._thread.start()

    def unwatch(self) -> None:
        with self._lock:
            self._consumer, self._partitions, self._starts = None, [], {}
            self._export({})

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            with self._lock:
                if self._consumer is None:
                    continue
                try:
                    self._export(self.measure())
                except Exception as exc:  # noqa: BLE001 (a broker hiccup: measure again next time, say it once)
                    if not self._warned:
                        logging.getLogger("perpline").warning("consumer lag not measured",
                                                              extra={"group": self.group, "error": repr(exc)})
                        self._warned = True

    def measure(self) -> dict[tuple[str, int], int]:
        """{(topic, partition): lag} for the watched partitions whose position and end are known."""
        from confluent_kafka import TopicPartition  # noqa: PLC0415 (obs is imported by processes without Kafka)

        consumer = self._consumer
        if consumer is None or not self._partitions:
            return {}
        tps = [TopicPartition(topic, partition) for topic, partition in self._partitions]
        positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(tps)}
        for key, start in self._starts.items():
            if positions.get(key, -1) < 0:
                positions[key] = start
        unknown = [tp for tp in tps if positions[(tp.topic, tp.partition)] < 0]
        if unknown:
            for tp in consumer.committed(unknown, timeout=LAG_TIMEOUT_S):
                positions[(tp.topic, tp.partition)] = tp.offset
        out = {}
        for tp in tps:
            position = positions[(tp.topic, tp.partition)]
            if position < 0:
                continue
            _, fetched = consumer.get_watermark_offsets(tp, cached=True)
            _, listed = consumer.get_watermark_offsets(tp, timeout=LAG_TIMEOUT_S, cached=False)
            end = max(fetched, listed)
            if end >= 0:
                out[(tp.topic, tp.partition)] = max(0, end - position)
        return out

    def _export(self, lags: dict[tuple[str, int], int]) -> None:
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(self.group, topic, str(partition)).set(lag)
        for topic, partition in self._exported - set(lags):
            try:
                CONSUMER_LAG.remove(self.group, topic, str(partition))
            except KeyError:
                pass
        self._exported = set(lags)
        CONSUMER_LAG_TIMESTAMP.labels(self.group).set(time.time())


# --- readiness for processes without an HTTP server: PERPLINE_READY_FILE ---------------


def ready_file() -> Path | None:
    value = os.environ.get("PERPLINE_READY_FILE")
    return Path(value) if value else None


def mark_ready() -> None:
    path = ready_file()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(os.getpid()))


def clear_ready() -> None:
    path = ready_file()
    if path is not None:
        path.unlink(missing_ok=True)


class StopFlag:
    """True once SIGTERM or SIGINT arrived: the main loop of a process checks it and ends cleanly."""

    def __init__(self) -> None:
        self.stopping = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, *_: object) -> None:
        self.stopping = True

    def __bool__(self) -> bool:
        return self.stopping
