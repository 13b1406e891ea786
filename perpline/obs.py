"""Observability shared by every process: structured JSON logs with the trace id, Prometheus metrics."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


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
        return json.dumps(out, default=str)


def setup_logging(component: str, level: str | None = None) -> logging.Logger:
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
