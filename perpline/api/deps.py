"""What every API surface shares: the process's dependencies (ApiDeps), their accessor, the metrics
body, instrument lookup and a command's metadata. Its own module so the application (app.py), the
service layer and the wire adapters all import it and none of them imports another to get it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import HTTPConnection

from perpline.api import auth
from perpline.api.clientip import Network
from perpline.api.publisher import Publisher
from perpline.api.ratelimit import RateLimiter
from perpline.api.readmodel import ReadModel
from perpline.auth.registry import KeyRegistry
from perpline.auth.signing import ReplayGuard
from perpline.auth.throttle import HashPool, LoginLimiter
from perpline.ch.client import get_client
from perpline.config import settings
from perpline.contracts import codec
from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.instruments import Instrument, load_catalog

SEND_TIMEOUT_S = 5.0  # a command's acknowledgement by the broker
_local = threading.local()


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

    def rm(self) -> ReadModel:
        """The read model; NOT_READY before the application started it (no lifespan, a unit test)."""
        if self.readmodel is None:
            raise PerplineError(Code.NOT_READY, "read model not started")
        return self.readmodel


def deps(conn: HTTPConnection) -> ApiDeps:
    """The process's dependencies, from a request or a websocket (a FastAPI dependency)."""
    found: ApiDeps = conn.app.state.deps
    return found


async def request_deps(conn: HTTPConnection) -> ApiDeps:
    """`deps` as a FastAPI dependency. Async because FastAPI hands a plain function dependency to a
    worker thread: a thread hop per request for an attribute read (py-spy, 16 trading pairs: the
    worker-thread handoff was 7 % of the API's CPU)."""
    return deps(conn)


def metrics_response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def now_ms() -> int:
    return int(time.time() * 1000)


def instrument(symbol: str | None) -> Instrument:
    """The one symbol lookup of every surface: native (BTCUSDT-PERP) and Binance (BTCUSDT) names."""
    if not symbol:
        raise PerplineError(Code.MISSING_FIELD, "symbol")
    inst = load_catalog().get(symbol)
    if inst is None:
        raise PerplineError(Code.UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}")
    return inst


def meta(request: Request, cause: str) -> dict[str, Any]:
    """A record's trace, cause and time."""
    return {"trace_id": request.state.trace_id, "causation_id": cause, "ts_ms": now_ms()}


def command_meta(request: Request, rid: str) -> dict[str, Any]:
    """What an account command carries besides its own fields: trace, cause, time and, for a signed
    request, its one-use nonce (the accounts processor refuses a replay across API replicas)."""
    return {**meta(request, rid), **auth.one_use(request)}
