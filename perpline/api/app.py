"""The FastAPI application: middleware (trace id, metrics, size limit), lifecycle, routers.

The composition root: the only module that imports the wire adapters (routers). What they share
(ApiDeps, the metrics body) is perpline.api.deps, so no adapter imports this module or another
adapter (tests/unit/test_api_imports.py checks it)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import Counter, Histogram
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from perpline.api import (
    errors,
    fapi,
    fastpath,
    fstream,
    listenkey,
    market,
    ops,
    ratelimit,
    sessions,
    stream,
    v1,
)
from perpline.api.deps import ApiDeps, metrics_response
from perpline.api.publisher import Publisher
from perpline.api.readmodel import start_read_model
from perpline.api.service import halts
from perpline.api.service.listenkeys import ListenKeys
from perpline.config import producer_config
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.ids import new_trace_id
from perpline.contracts.units import UnitError, parse_uint

log = logging.getLogger("perpline.api")

MAX_BODY_BYTES = 64 * 1024
MAX_QUERY_BYTES = 8 * 1024
WEB_DIR = Path(__file__).parent / "web"
REQUESTS = Counter("perpline_api_requests_total", "API requests", ["route", "status"])
# FastAPI's OpenTelemetry hooks, off: with them on, every request asked the tracer and meter providers
# whether they are configured (os.environ reads, ~8 % of the API's CPU under load; py-spy). Our own
# metrics and the trace id are TraceAndMeasure's.
NO_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}
LATENCY = Histogram("perpline_api_request_seconds", "API latency", ["route"])


def create_app(deps: ApiDeps) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deps.publisher = Publisher(producer_config(deps.bootstrap))
        if deps.readmodel is None:  # `perpline api` starts it before importing this module (perpline.api.main)
            deps.registry, deps.readmodel = start_read_model(deps.bootstrap, deps.topics, deps.secret_key)
        app.state.fstream = fstream.Hub(deps, app.state.listen_keys)
        async with halts.watching(deps):  # orders read the halted symbols from memory, refreshed off the loop
            yield
        await app.state.fstream.stop()
        deps.readmodel.stop()
        deps.publisher.close()

    app = FastAPI(title="perpline", version="0.1.0", lifespan=lifespan, telemetry=NO_TELEMETRY,
                  description="A USDT-margined perpetual-futures exchange. Amounts are decimal strings.")
    app.state.deps = deps
    app.state.trusted_proxies = deps.trusted_proxies
    app.add_exception_handler(errors.NoDecision, errors.on_no_decision)
    app.add_exception_handler(PerplineError, errors.on_perpline_error)
    app.add_exception_handler(UnitError, errors.on_perpline_error)
    app.add_exception_handler(RequestValidationError, errors.on_validation_error)
    app.add_middleware(TraceAndMeasure)
    # Routes are matched in order, one by one: the Binance routes, which carry the trading load, first
    # (py-spy, 16 pairs on /fapi: route matching behind the native routes was 16 % of the API's CPU).
    app.include_router(listenkey.router)  # before fapi's catch-all route
    app.include_router(fapi.router)
    app.include_router(v1.router)
    app.include_router(sessions.router)
    app.include_router(market.router)
    app.include_router(stream.router)
    app.include_router(fstream.router)
    app.state.listen_keys = ListenKeys()
    app.include_router(ops.router)
    app.mount("/app", StaticFiles(directory=WEB_DIR), name="web")

    @app.get("/", include_in_schema=False)
    def terminal() -> FileResponse:
        """The web trading terminal (perpline/api/web: plain HTML, CSS and JavaScript, no build step)."""
        return FileResponse(WEB_DIR / "index.html")

    app.state.route_costs = ratelimit.RouteCosts(app.routes)  # refuses to start with a route that has no weight
    app.state.fast_routes = fastpath.table(app.routes)  # the order routes, called without the router
    return app


class TraceAndMeasure:
    """Pure ASGI middleware around every HTTP request: trace id, rate-limit admission, size and
    duplicate-parameter refusals, metrics, the request log line, ETag on JSON reads, and the
    X-Trace-Id / X-MBX-USED-WEIGHT-1M / X-Stage-Ms headers.

    Pure ASGI rather than Starlette's BaseHTTPMiddleware, which runs each request in an extra task
    group with memory streams: about a fifth of the API's CPU on a trivial request (measured in
    process, 1,075 -> 840 us of CPU per GET /fapi/v1/time). Here the response messages pass through
    one wrapper; only a GET answered 200 with JSON is held back, to compute its ETag."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        trace_id = new_trace_id()
        request.state.trace_id = trace_id
        request.state.arrived = time.perf_counter()
        refusal = _refusal(request)
        if refusal is not None:
            await errors.error_response(request, *refusal)(scope, receive, send)
            return
        reply = _Reply(request, send)
        started = time.perf_counter()
        fast = scope["app"].state.fast_routes.get((scope["method"], scope["path"]))
        try:
            if fast is not None:
                await fastpath.serve(fast, scope, receive, reply.send)
            else:
                await self.app(scope, receive, reply.send)
        finally:
            _measure(request, trace_id, reply.status, time.perf_counter() - started)


class _Reply:
    """The response side of one request: adds our headers to the start message and, for a JSON read
    answered 200, holds the body to send it with its ETag (or 304 if the client holds it already)."""

    def __init__(self, request: Request, send: Send) -> None:
        self.request = request
        self.downstream = send
        self.status = 500  # until the app starts a response
        self.held: Message | None = None
        self.parts: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = MutableHeaders(scope=message)
            _our_headers(self.request, headers)
            if (self.request.method == "GET" and self.status == 200
                    and headers.get("content-type", "").startswith("application/json")):
                self.held = message
                return
        elif message["type"] == "http.response.body" and self.held is not None:
            self.parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_with_etag(self.held, b"".join(self.parts))
            return
        await self.downstream(message)

    async def _send_with_etag(self, start: Message, body: bytes) -> None:
        """A JSON read carries an ETag of its body; a client that already holds that body (If-None-Match)
        gets 304 and no body, so an idle page that polls costs almost no bandwidth."""
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        headers = MutableHeaders(scope=start)
        headers["ETag"] = etag
        if self.request.headers.get("if-none-match") == etag:
            del headers["content-length"]
            self.status = 304
            await self.downstream({**start, "status": 304})
            await self.downstream({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await self.downstream(start)
        await self.downstream({"type": "http.response.body", "body": body, "more_body": False})


def _refusal(request: Request) -> tuple[int, str] | None:
    """(code, message) if the request is refused before any route reads it, else None."""
    limited = ratelimit.admit(request)
    if limited is not None:
        return int(Code.RATE_LIMITED), limited
    refused = _size_refusal(request)
    if refused is not None:
        return int(Code.REQUEST_TOO_LARGE), refused
    duplicate = _duplicate_refusal(request)
    if duplicate is not None:
        return int(Code.DUPLICATE_PARAMETER), duplicate
    return None


def _our_headers(request: Request, headers: MutableHeaders) -> None:
    headers["X-Trace-Id"] = request.state.trace_id
    used = getattr(request.state, "used_weight", None)
    if used is not None:
        headers["X-MBX-USED-WEIGHT-1M"] = str(used)
    stages = getattr(request.state, "stages", None)
    if stages is not None:
        headers["X-Stage-Ms"] = stages


def _measure(request: Request, trace_id: str, status: int, elapsed_s: float) -> None:
    path = getattr(request.scope.get("route"), "path", "unmatched")
    requests, latency = _metrics_of(path, status)
    requests.inc()
    latency.observe(elapsed_s)
    if path not in ("/metrics", "/healthz", "/readyz"):
        log.info("request", extra={"trace_id": trace_id, "method": request.method, "route": path,
                                   "status": status, "ms": round(elapsed_s * 1000, 2)})


@lru_cache(maxsize=4096)  # routes x statuses: labels() validates and joins its labels on every call
def _metrics_of(path: str, status: int) -> tuple[Any, Any]:
    return REQUESTS.labels(path, str(status)), LATENCY.labels(path)


def _size_refusal(request: Request) -> str | None:
    """Why a request is refused for its size before anything reads it, or None. A body must declare
    its length (no chunked uploads), at most MAX_BODY_BYTES; the query at most MAX_QUERY_BYTES."""
    if len(request.scope.get("query_string", b"")) > MAX_QUERY_BYTES:
        return f"query string over {MAX_QUERY_BYTES} bytes"
    declared = request.headers.get("content-length")
    if declared is None:
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        return "a request body must declare its Content-Length" if chunked else None
    try:
        length = parse_uint(declared, what="Content-Length")
    except UnitError:
        return "Content-Length is not a number"
    return f"body over {MAX_BODY_BYTES} bytes" if length > MAX_BODY_BYTES else None


def _duplicate_refusal(request: Request) -> str | None:
    """A query parameter given twice is refused on every route (`symbol=A&symbol=B` must not mean B);
    signed form bodies get the same rule in perpline.auth.signing.unique_params."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            return f"parameter {name!r} given twice"
        seen.add(name)
    return None


__all__ = ["ApiDeps", "create_app", "metrics_response"]
