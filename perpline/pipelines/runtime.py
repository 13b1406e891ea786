"""Processor runtime: readiness on partition assignment, consumer lag, and the shared main() of stateful processors.

`perpline up` (and Kubernetes exec probes) watch PERPLINE_READY_FILE. A Quix processor is
ready once its consumer has partitions assigned, not merely when the process started.
Each processor exports its own consumer lag per assigned partition (perpline_consumer_lag_messages).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quixstreams import Application

from perpline.config import processing_guarantee, settings
from perpline.obs import LagWatcher, clear_ready, mark_ready, serve_metrics, setup_logging
from perpline.pipelines.app import make_app


def ready_on_assign(app: Application) -> None:
    """Write the ready file after the first partition assignment (wraps Quix's assignment callback)."""
    clear_ready()
    original = app._on_assign  # noqa: SLF001 (no public hook in quixstreams 3.28)

    def on_assign(consumer: Any, partitions: Any) -> None:
        original(consumer, partitions)
        if partitions:
            mark_ready()

    app._on_assign = on_assign  # type: ignore[method-assign]


def export_lag(app: Application) -> LagWatcher:
    """Measure the consumer's lag on the partitions it holds (wraps Quix's rebalance callbacks: watching starts
    on assignment, stops on revocation, which librdkafka also calls when the consumer closes)."""
    watcher = LagWatcher(app.config.consumer_group)
    assign, revoke, lost = app._on_assign, app._on_revoke, app._on_lost  # noqa: SLF001 (no public hook)

    def on_assign(consumer: Any, partitions: Any) -> None:
        assign(consumer, partitions)
        if partitions:
            watcher.watch(consumer, partitions)

    def on_revoke(consumer: Any, partitions: Any) -> None:
        watcher.unwatch()
        revoke(consumer, partitions)

    def on_lost(consumer: Any, partitions: Any) -> None:
        watcher.unwatch()
        lost(consumer, partitions)

    app._on_assign, app._on_revoke, app._on_lost = on_assign, on_revoke, on_lost  # type: ignore[method-assign]
    return watcher


def run_stateful(name: str, consumer_group: str, build: Callable[[Application], object],
                 argv: list[str] | None) -> None:
    """The `main()` of a stateful processor: flags, logs, metrics, app, readiness, run."""
    parser = argparse.ArgumentParser(prog=f"perpline {name}")
    parser.add_argument("--state-dir", type=Path, default=settings().data_dir / "state" / name)
    parser.add_argument("--metrics-port", type=int, default=None)
    args = parser.parse_args(argv)
    setup_logging(name)
    serve_metrics(args.metrics_port)
    app = make_app(consumer_group, state_dir=args.state_dir, processing_guarantee=processing_guarantee())
    build(app)
    ready_on_assign(app)
    export_lag(app)
    app.run()
