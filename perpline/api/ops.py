"""Operations endpoints: liveness, readiness, metrics."""

from __future__ import annotations

import functools
import ssl
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from perpline.api import errors, models
from perpline.api.deps import ApiDeps, metrics_response
from perpline.api.models import ok

router = APIRouter(responses=errors.documented(429, 503))


@router.get("/healthz", tags=["ops"], responses=ok(models.Status))
def healthz() -> Any:
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"], responses={**ok(models.Readiness),
            503: {"model": models.Readiness, "description": "not ready: the checks that failed"}})
def readyz(request: Request) -> Any:
    d: ApiDeps = request.app.state.deps
    checks = {"broker": d.publisher is not None and _broker_ok(d),
              "clickhouse": _clickhouse_ok(d),
              "readmodel_caught_up": d.readmodel is not None and d.readmodel.caught_up.is_set()}
    return JSONResponse({"ready": all(checks.values()), "checks": checks}, status_code=200 if all(checks.values()) else 503)


def _broker_ok(d: ApiDeps) -> bool:
    assert d.publisher is not None
    try:
        d.publisher.producer.list_topics(timeout=2)
        return True
    except Exception:  # noqa: BLE001 (any failure means not ready)
        return False


def _clickhouse_ok(d: ApiDeps) -> bool:
    """ClickHouse answers /ping. A plain urllib request: an httpx client loads a CA bundle when it is
    built (0.2 s of CPU during a replica's start, measured with py-spy), and a ping needs no pool."""
    if not d.clickhouse_url:
        return True
    parts = urlsplit(d.clickhouse_url)
    context = _tls() if parts.scheme == "https" else None
    try:
        with urllib.request.urlopen(f"{parts.scheme}://{parts.hostname}:{parts.port}/ping", timeout=2,
                                    context=context) as answer:
            return bool(answer.status == 200)
    except (OSError, ValueError):  # URLError, HTTPError, timeouts, refused connections are all OSError
        return False


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every probe of an https ClickHouse (each would load the CA bundle)."""
    return ssl.create_default_context()


@router.get("/metrics", tags=["ops"], response_class=PlainTextResponse, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"}})
def metrics() -> Response:
    return metrics_response()
