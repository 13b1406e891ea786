"""Request weights per IP and per caller in one-minute windows, as Binance counts them, for every
route of both APIs (/api/v1 with its sessions and market routes, /fapi, the websocket upgrades).

One table, WEIGHTS, gives each route its weight and says whether it places an order; a route
missing from it stops the app at start-up (RouteCosts), so a new route cannot go unlimited. Only
the operations probes (/metrics, /healthz, /readyz) and the web terminal's files are EXEMPT.

Every request is charged to its client address (perpline.api.clientip) before anything else reads
it; once the caller is known (API key, web session or trusted X-Account-Id) the same weight is
charged to the caller, and an order-placing route also counts one order. Over a limit: 429 with
Retry-After (seconds to the next window) and X-MBX-USED-WEIGHT-1M (the address's weight this
minute, on every answer as /fapi has always sent it); the code is -1003 on /fapi, RATE_LIMITED
(6003) on the native API. The limits are settings (PERPLINE_RATE_LIMIT_IP / _KEY / _ORDERS).

Counts live in this process: with N API replicas behind a balancer the effective limit is
about N times this one (documented; a shared counter would need a store we do not run).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from prometheus_client import Counter
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Mount
from starlette.websockets import WebSocket

from perpline.api.clientip import client_ip
from perpline.contracts.codes import Code, PerplineError

MAX_TRACKED = 100_000
WINDOW_S = 60  # every limit counts per minute (fixed windows): what exchangeInfo's rateLimits announce
REJECTED = Counter("perpline_api_rate_limited_total", "requests refused with 429 by a rate limit", ["limit"])
WS_TRY_AGAIN_LATER = 1013  # close code when the server cannot answer a refused upgrade with a 429


@dataclass(frozen=True)
class Cost:
    weight: int
    orders: int = 0  # 1: the route places (or replaces) an order and counts in the orders-per-minute limit


READ, HEAVY, HISTORY, ORDER = Cost(1), Cost(2), Cost(5), Cost(1, orders=1)
UNMATCHED = Cost(1)  # a path no route serves (404, 405) still costs its caller
# "METHOD path" (WS for a websocket upgrade, MOUNT for a mounted app) -> its cost.
WEIGHTS: dict[str, Cost] = {
    # native trading and account API
    "POST /api/v1/wallet/deposits": READ, "POST /api/v1/wallet/withdrawals": READ,
    "POST /api/v1/orders": ORDER, "PUT /api/v1/orders/{order_id}": ORDER,
    "DELETE /api/v1/orders/{order_id}": READ, "DELETE /api/v1/orders": READ,
    "GET /api/v1/orders/{order_id}": READ, "GET /api/v1/orders": READ, "POST /api/v1/leverage": READ,
    "GET /api/v1/requests/{req_id}": READ,
    "GET /api/v1/account/balances": HISTORY, "GET /api/v1/account/positions": HISTORY,
    "GET /api/v1/account/trades": HISTORY, "GET /api/v1/account/funding": HISTORY,
    "GET /api/v1/account/journals": HISTORY, "GET /api/v1/account/statement": HISTORY,
    "GET /api/v1/account/ledger-view": HISTORY, "GET /api/v1/account/view": HISTORY,
    "GET /api/v1/account/trace/{key}": HISTORY,
    "POST /api/v1/keys": READ, "GET /api/v1/keys": READ, "DELETE /api/v1/keys/{api_key}": READ,
    # native web sessions (a password hash costs real CPU)
    "POST /api/v1/auth/signup": HISTORY, "POST /api/v1/auth/login": HISTORY, "POST /api/v1/auth/refresh": READ,
    "POST /api/v1/auth/logout": READ, "GET /api/v1/auth/me": READ,
    # native market data
    "GET /api/v1/market/instruments": READ, "GET /api/v1/market/depth": HEAVY,
    "GET /api/v1/market/depth/updates": READ, "GET /api/v1/market/trades": HEAVY, "GET /api/v1/market/mark": READ,
    "GET /api/v1/market/funding": READ, "GET /api/v1/market/candles": HEAVY, "GET /api/v1/market/ticker": READ,
    "GET /api/v1/market/order-cost": READ,
    "WS /api/v1/market/stream": HISTORY, "WS /api/v1/account/stream": HISTORY,
    # Binance USD-M subset
    "GET /fapi/v1/ping": READ, "GET /fapi/v1/time": READ, "GET /fapi/v1/exchangeInfo": READ,
    "GET /fapi/v1/depth": HEAVY, "GET /fapi/v1/aggTrades": HEAVY, "GET /fapi/v1/trades": HEAVY,
    "GET /fapi/v1/ticker/24hr": READ, "GET /fapi/v1/premiumIndex": READ, "GET /fapi/v1/fundingRate": READ,
    "GET /fapi/v1/klines": HEAVY, "GET /fapi/v1/markPriceKlines": HEAVY,
    "GET /fapi/v2/account": HISTORY, "GET /fapi/v3/account": HISTORY, "GET /fapi/v2/balance": HISTORY,
    "GET /fapi/v3/balance": HISTORY, "GET /fapi/v2/positionRisk": HISTORY, "GET /fapi/v3/positionRisk": HISTORY,
    "GET /fapi/v1/leverageBracket": READ, "GET /fapi/v1/commissionRate": HISTORY, "POST /fapi/v1/leverage": READ,
    "GET /fapi/v1/income": HISTORY, "POST /fapi/v1/order": ORDER, "GET /fapi/v1/order": READ,
    "DELETE /fapi/v1/order": READ, "PUT /fapi/v1/order": ORDER, "DELETE /fapi/v1/allOpenOrders": READ,
    "GET /fapi/v1/openOrders": READ, "GET /fapi/v1/allOrders": HISTORY, "GET /fapi/v1/userTrades": HISTORY,
    "POST /fapi/v1/listenKey": READ, "PUT /fapi/v1/listenKey": READ, "DELETE /fapi/v1/listenKey": READ,
    **{f"{method} /fapi/{{path:path}}": READ for method in ("GET", "POST", "PUT", "DELETE")},
    # Binance USD-M streams (perpline.api.fstream): one upgrade each, the streams are limited per connection
    **{f"WS /fstream{path}": HEAVY for path in ("/public/ws/{slot}", "/market/ws/{slot}", "/public/ws", "/market/ws",
                                               "/ws", "/ws/{path:path}", "/private/ws", "/stream", "/public/stream",
                                               "/market/stream")},
    # the API's own documentation
    "GET /openapi.json": READ, "GET /docs": READ, "GET /docs/oauth2-redirect": READ, "GET /redoc": READ,
}
EXEMPT = frozenset({"GET /metrics", "GET /healthz", "GET /readyz", "GET /", "MOUNT /app"})


def _route_keys(route: BaseRoute) -> list[tuple[str, str]]:
    """(method, "METHOD path") for each way a route is reached; HEAD is charged as GET."""
    path = str(getattr(route, "path", ""))
    if isinstance(route, Mount):
        return [("MOUNT", f"MOUNT {path}")]
    methods = getattr(route, "methods", None)
    if methods is None:  # a websocket route
        return [("WS", f"WS {path}")]
    return [(m, f"{m} {path}") for m in sorted(methods) if m != "HEAD" or "GET" not in methods]


class RouteCosts:
    """Each route's cost, looked up per request: a dictionary for fixed paths, the routes' own path
    patterns (in the routers' order) for paths with parameters and mounts."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self._fixed: dict[str, Cost | None] = {}
        self._patterns: list[tuple[BaseRoute, dict[str, Cost | None]]] = []
        missing = []
        for context in iter_route_contexts(routes):
            route = context.original_route
            costs: dict[str, Cost | None] = {}
            for method, key in _route_keys(route):
                if key not in EXEMPT and key not in WEIGHTS:
                    missing.append(key)
                costs[method] = None if key in EXEMPT else WEIGHTS.get(key)
            if "{" in str(getattr(route, "path", "")) or isinstance(route, Mount):
                self._patterns.append((route, costs))
            else:
                self._fixed.update({f"{m} {getattr(route, 'path', '')}": c for m, c in costs.items()})
        if missing:
            raise ValueError(f"routes without a weight in perpline.api.ratelimit.WEIGHTS: {sorted(missing)}")

    def of(self, conn: HTTPConnection) -> Cost | None:
        """The cost of this request (None: exempt)."""
        method = "WS" if conn.scope["type"] == "websocket" else conn.scope.get("method", "GET")
        method = "GET" if method == "HEAD" else method
        key = f"{method} {conn.scope['path']}"
        if key in self._fixed:
            return self._fixed[key]
        for route, costs in self._patterns:  # the routers' order; their regexes (route.matches costs ~40 us)
            if route.path_regex.match(conn.scope["path"]):  # type: ignore[attr-defined]
                if isinstance(route, Mount):
                    return costs["MOUNT"]
                if method in costs:  # else another route of this path may serve the method, as in the router
                    return costs[method]
        return UNMATCHED


def _limiter(conn: HTTPConnection) -> RateLimiter:
    limiter: RateLimiter = conn.app.state.deps.limiter
    return limiter


def admit(conn: HTTPConnection) -> str | None:
    """Charge a request's weight to its client address before anything else reads it; why it is
    refused, or None. Leaves the route's cost on the connection for charge_caller."""
    cost = conn.app.state.route_costs.of(conn)
    if cost is None:
        return None
    conn.state.route_cost = cost
    return _charge(conn, "ip", client_ip(conn), cost.weight)


def charge_caller(conn: HTTPConnection, api_key: str | None, user_id: int) -> None:
    """Once the caller is known, charge it the route's weight, and an order for an order-placing
    route; raises RATE_LIMITED. The caller is its API key, or `account:N` for a web session or the
    trusted X-Account-Id (unsigned calls of one account share one bucket)."""
    cost: Cost | None = getattr(conn.state, "route_cost", None)
    if cost is None:
        return
    who = api_key or f"account:{user_id}"
    refused = _charge(conn, "key", who, cost.weight)
    if refused is None and cost.orders:
        refused = _charge(conn, "orders", who, cost.orders)
    if refused is not None:
        raise PerplineError(Code.RATE_LIMITED, refused)


def _charge(conn: HTTPConnection, kind: str, who: str, weight: int) -> str | None:
    limiter = _limiter(conn)
    allowed, used, retry_s = limiter.charge(kind, who, weight)
    if kind == "ip":
        conn.state.used_weight = used
    if allowed:
        return None
    conn.state.retry_after = retry_s
    return f"{kind} limit of {limiter.limits[kind]} per minute reached"


async def admit_websocket(ws: WebSocket) -> bool:
    """admit() for a websocket upgrade: refused, it is answered 429 (or closed 1013 where the server
    cannot send an HTTP answer to an upgrade) and the endpoint returns."""
    refused = admit(ws)
    if refused is None:
        return True
    headers = {"Retry-After": str(ws.state.retry_after), "X-MBX-USED-WEIGHT-1M": str(ws.state.used_weight)}
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(JSONResponse({"code": int(Code.RATE_LIMITED), "msg": refused}, 429, headers))
    else:
        await ws.close(code=WS_TRY_AGAIN_LATER, reason=refused[:100])
    return False


class RateLimiter:
    """The counters: weight per address ("ip") and per caller ("key"), orders per caller ("orders")."""

    def __init__(self, ip_limit: int, key_limit: int, order_limit: int) -> None:
        self.limits = {"ip": ip_limit, "key": key_limit, "orders": order_limit}
        for kind in self.limits:
            REJECTED.labels(kind)  # exported from the start (at 0)
        self._window = 0
        self._used: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def charge(self, kind: str, who: str, weight: int, now_s: float | None = None) -> tuple[bool, int, int]:
        """(allowed, used weight in this window, seconds until the next window)."""
        now = time.time() if now_s is None else now_s
        window = int(now // WINDOW_S)
        with self._lock:
            if window != self._window:
                self._window, self._used = window, {}
            if len(self._used) >= MAX_TRACKED and (kind, who) not in self._used:
                REJECTED.labels(kind).inc()
                return False, 0, WINDOW_S - int(now % WINDOW_S)
            used = self._used.get((kind, who), 0) + weight
            allowed = used <= self.limits[kind]
            if allowed:
                self._used[(kind, who)] = used
            else:
                REJECTED.labels(kind).inc()
            return allowed, used, WINDOW_S - int(now % WINDOW_S)
