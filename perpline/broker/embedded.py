"""The embedded broker in this process: perpline's own Kafka-API broker (perpline/broker/server.py).

`python -m perpline.broker.embedded --port P [--metrics-port M]` binds, creates every topic of
redpanda/topics.yaml, prints one JSON line {"event": "broker_ready", ...} on stdout and serves until
SIGTERM/SIGINT. A taken port is an error naming the process that holds it (exit 1).

Why not Tansu (docs/broker-notes.md): a fetch is answered as soon as data arrives (long polling), a
fetch finds its first batch by bisection instead of listing every stored batch, nothing waits for a
timer, and an empty fetch costs microseconds, so an idle stack and a hop's latency are both small.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import Gauge

from perpline.broker.admin import BROKER_TOPICS, BROKER_UP, announce_ready, ensure_topics
from perpline.broker.server import BrokerServer
from perpline.obs import serve_metrics, setup_logging
from perpline.stack import ports

log = logging.getLogger("perpline.broker")

BYTES_STORED = Gauge("perpline_broker_bytes_stored", "record batch bytes the embedded broker holds")
BYTES_SPILLED = Gauge("perpline_broker_bytes_spilled", "of perpline_broker_bytes_stored, the bytes held in spill files")
TOPIC_BYTES = Gauge("perpline_broker_topic_bytes", "record batch bytes the embedded broker holds, per topic", ["topic"])


def _parse(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="perpline broker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=19092)
    parser.add_argument("--metrics-port", type=int, default=None, help="serve /metrics here (0 = off)")
    parser.add_argument("--start-timeout", type=float, default=30.0)
    parser.add_argument("--spill-dir", default=None,
                        help="keep the oldest batches of deleting topics here, not in memory (emptied at start)")
    parser.add_argument("--schema-dir", default=None, help=argparse.SUPPRESS)  # Tansu's; refused below
    return parser.parse_args(None if argv is None else list(argv))


async def _serve(args: argparse.Namespace) -> int:
    started = time.monotonic()
    server = BrokerServer(args.host, args.port, _spill_dir(args.spill_dir))
    try:
        await server.start()
    except OSError as exc:
        log.error("broker start failed: port taken",
                  extra={"port": args.port, "holder": ports.holder(args.port), "error": str(exc)})
        return 1
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    bootstrap = f"{args.host}:{args.port}"
    try:
        created = await asyncio.wait_for(asyncio.to_thread(ensure_topics, bootstrap), args.start_timeout)
    except Exception as exc:  # noqa: BLE001 (logged, exit 1)
        log.error("broker start failed", extra={"error": str(exc)})
        await server.stop()
        return 0 if stopping.is_set() else 1
    BROKER_UP.set(1)
    announce_ready(bootstrap, created, time.monotonic() - started)
    while not stopping.is_set():
        _export_sizes(server)
        BROKER_TOPICS.set(len(server.cluster.topics))
        try:
            await asyncio.wait_for(stopping.wait(), 1.0)
        except TimeoutError:
            pass
    BROKER_UP.set(0)
    await server.stop()
    log.info("broker stopped")
    return 0


def _spill_dir(given: str | None) -> Path | None:
    """The spill directory, emptied of a previous run's files (they live as long as one broker process)."""
    if given is None:
        return None
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.batches"):
        stale.unlink()
    return path


def _export_sizes(server: BrokerServer) -> None:
    total = spilled = 0
    for name, topic in list(server.cluster.topics.items()):
        held = topic.bytes_stored()
        TOPIC_BYTES.labels(name).set(held)
        total += held
        spilled += sum(log.spill.bytes for log in topic.partitions if log.spill is not None)
    BYTES_STORED.set(total)
    BYTES_SPILLED.set(spilled)


def run(argv: Iterable[str] | None = None) -> int:
    args = _parse(argv)
    setup_logging("broker")
    if args.schema_dir is not None:
        log.error("--schema-dir is Tansu's: PERPLINE_BROKER=tansu")
        return 1
    BROKER_UP.set(0)
    serve_metrics(args.metrics_port)
    try:
        import uvloop  # noqa: PLC0415 (optional speed-up)

        return uvloop.run(_serve(args))
    except ImportError:
        return asyncio.run(_serve(args))


def main(argv: Iterable[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
