"""Readiness for processes without an HTTP server: a file written when the process can do work.

`perpline up` (and Kubernetes exec probes) watch PERPLINE_READY_FILE. A Quix processor is
ready once its consumer has partitions assigned, not merely when the process started.
"""

from __future__ import annotations

from typing import Any

from quixstreams import Application

from perpline.obs import clear_ready, mark_ready


def ready_on_assign(app: Application) -> None:
    """Write the ready file after the first partition assignment (wraps Quix's assignment callback)."""
    clear_ready()
    original = app._on_assign  # noqa: SLF001 (no public hook in quixstreams 3.28)

    def on_assign(consumer: Any, partitions: Any) -> None:
        original(consumer, partitions)
        if partitions:
            mark_ready()

    app._on_assign = on_assign  # type: ignore[method-assign]
