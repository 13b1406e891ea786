"""The FastAPI application: middleware (trace id, metrics, size limit), lifecycle, routers."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from perpline.api import errors, ratelimit
from perpline.api.clientip import Network
from perpline.api.publisher import Publisher
from perpline.api.ratelimit import RateLimiter
from perpline.api.readmodel import ReadModel
from perpline.auth.registry import KeyRegistry
from perpline.auth.signing import ReplayGuard
from perpline.auth.throttle import HashPool, LoginLimiter
from perpline.ch.client import get_client
from perpline.config import producer_config, settings
from perpline.contracts import codec
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.ids import new_trace_id
from perpline.contracts.units import UnitError, parse_uint

log = logging.getLogger("perpline.api")

SEND_TIMEOUT_S = 5.0  # a command's acknowledgement by the broker
MAX_BODY_BYTES = 64 * 1024
MAX_QUERY_BYTES = 8 * 1024
WEB_DIR = Path(__file__).parent / "web"
_local = threading.local()
REQUESTS = Counter("perpline_api_requests_total", "API requests", ["route", "status"])
LATENCY = Histogram("perpline_api_request_seconds", "API latency", ["route"])


@dataclass
class ApiDeps:
    bootstrap: str
    topics: dict[str, str]
    wait_s: float
    clickhouse_url: str | None = None
    secret_key: str = ""
    trust_account_header: bool = False
    faucet: bool = False
    publisher: Publisher | None = None
    readmodel: ReadModel | None = None
    registry: KeyRegistry | None = None
    guard: ReplayGuard = field(default_factory=ReplayGuard)
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(*settings().rate_limits))
    trusted_proxies: tuple[Network, ...] = ()  # whose X-Forwarded-For is believed (perpline.api.clientip)
    logins: LoginLimiter = field(default_factory=LoginLimiter)  # failed-login lockouts (perpline.auth.throttle)
    hashes: HashPool = field(default_factory=HashPool)  # scrypt, bounded

    async def send(self, logical_topic: str, key: str, msg: object, timeout_s: float = SEND_TIMEOUT_S) -> None:
        """Publish one record and wait for the broker's acknowledgement of it (perpline.api.publisher)."""
        assert self.publisher is not None
        await self.publisher.send(self.topics[logical_topic], key.encode(), codec.encode(msg), timeout_s)  # type: ignore[arg-type]

    def clickhouse(self) -> Any:
        """A ClickHouse client for history reads (one per thread: clients are not thread-safe)."""
        if self.clickhouse_url is None:
            raise PerplineError(Code.CLICKHOUSE_UNAVAILABLE, "no ClickHouse configured")
        client = getattr(_local, "client", None)
        if client is None:
            try:
                client = _local.client = get_client(self.clickhouse_url)
            except Exception as exc:  # noqa: BLE001
                raise PerplineError(Code.CLICKHOUSE_UNAVAILABLE, f"ClickHouse unreachable: {exc}") from exc
        return client


def create_app(deps: ApiDeps) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deps.publisher = Publisher(producer_config(deps.bootstrap))
        deps.registry = KeyRegistry(deps.secret_key)
        deps.readmodel = ReadModel(deps.bootstrap, deps.topics, deps.registry)
        deps.readmodel.start()
        app.state.fstream = fstream.Hub(deps, app.state.listen_keys)
        yield
        await app.state.fstream.stop()
        deps.readmodel.stop()
        deps.publisher.close()

    app = FastAPI(title="perpline", version="0.1.0", lifespan=lifespan,
                  description="A USDT-margined perpetual-futures exchange. Amounts are decimal strings.")
    app.state.deps = deps
    app.state.trusted_proxies = deps.trusted_proxies
    app.add_exception_handler(PerplineError, errors.on_perpline_error)
    app.add_exception_handler(UnitError, errors.on_perpline_error)
    app.add_exception_handler(RequestValidationError, errors.on_validation_error)
    app.middleware("http")(_trace_and_measure)
    from perpline.api import fapi, fstream, listenkey, market, ops, sessions, stream, v1  # noqa: PLC0415 (routers import the deps type from here)

    app.include_router(v1.router)
    app.include_router(sessions.router)
    app.include_router(market.router)
    app.include_router(stream.router)
    app.include_router(listenkey.router)  # before fapi's catch-all route
    app.include_router(fapi.router)
    app.include_router(fstream.router)
    app.state.listen_keys = listenkey.ListenKeys()
    app.include_router(ops.router)
    app.mount("/app", StaticFiles(directory=WEB_DIR), name="web")

    @app.get("/", include_in_schema=False)
    def terminal() -> FileResponse:
        """The web trading terminal (perpline/api/web: plain HTML, CSS and JavaScript, no build step)."""
        return FileResponse(WEB_DIR / "index.html")

    app.state.route_costs = ratelimit.RouteCosts(app.routes)  # refuses to start with a route that has no weight
    return app


async def _trace_and_measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    trace_id = new_trace_id()
    request.state.trace_id = trace_id
    request.state.arrived = time.perf_counter()
    limited = ratelimit.admit(request)
    if limited is not None:
        return errors.error_response(request, int(Code.RATE_LIMITED), limited)
    refused = _size_refusal(request)
    if refused is not None:
        return errors.error_response(request, int(Code.REQUEST_TOO_LARGE), refused)
    duplicate = _duplicate_refusal(request)
    if duplicate is not None:
        return errors.error_response(request, int(Code.DUPLICATE_PARAMETER), duplicate)
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    path = getattr(route, "path", "unmatched")
    elapsed = time.perf_counter() - started
    REQUESTS.labels(path, str(response.status_code)).inc()
    LATENCY.labels(path).observe(elapsed)
    if path not in ("/metrics", "/healthz", "/readyz"):
        log.info("request", extra={"trace_id": trace_id, "method": request.method, "route": path,
                                   "status": response.status_code, "ms": round(elapsed * 1000, 2)})
    if (request.method == "GET" and response.status_code == 200
            and response.headers.get("content-type", "").startswith("application/json")):
        response = await _with_etag(request, response)
    response.headers["X-Trace-Id"] = trace_id
    used = getattr(request.state, "used_weight", None)
    if used is not None:
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
    stages = getattr(request.state, "stages", None)
    if stages is not None:
        response.headers["X-Stage-Ms"] = stages
    return response


async def _with_etag(request: Request, response: Response) -> Response:
    """A JSON read carries an ETag of its body; a client that already holds that body (If-None-Match)
    gets 304 and no body, so an idle page that polls costs almost no bandwidth."""
    body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    headers["ETag"] = etag
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(content=body, status_code=200, headers=headers, media_type="application/json")


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


def metrics_response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
