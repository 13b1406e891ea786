"""The order routes without FastAPI's routing and dependency machinery.

py-spy on the API under 32 trading pairs (bench.load, POST /fapi/v1/order): route matching through
the included routers, dependency solving and the response plumbing were about 45 % of the API's CPU,
the order's own work (signature, checks, publish, wait) the rest. The busiest signed routes are
therefore called here directly, from TraceAndMeasure (perpline.api.app), with the same parts the
FastAPI route would use: the same endpoint function, the same signed caller (fapi.signed_caller:
signature, replay guard, weight charged to the key), the app's exception handlers, and a returned dict
encoded to the bytes FastAPI's JSONResponse sends. The FastAPI routes stay registered: they document the route (OpenAPI), and
they answer when PERPLINE_API_FAST_PATH=0 (tests/unit/test_api_fastpath.py compares both, byte for byte).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from perpline.api import auth, errors, fapi
from perpline.api.deps import deps
from perpline.contracts.codes import PerplineError
from perpline.contracts.units import UnitError


@dataclass(frozen=True)
class FastRoute:
    route: APIRoute  # the registered route: its endpoint is called, its path labels the metrics
    permission: str


def enabled() -> bool:
    return os.environ.get("PERPLINE_API_FAST_PATH", "1") != "0"


# (method, path) -> the endpoint, the permission its signed caller needs. Only async endpoints whose
# parameters are exactly (request, deps, signed caller): anything else keeps the router.
ROUTES: dict[tuple[str, str], tuple[Callable[..., Any], str]] = {
    ("POST", "/fapi/v1/order"): (fapi.new_order, auth.TRADE),
    ("DELETE", "/fapi/v1/order"): (fapi.cancel_order, auth.TRADE),
    ("PUT", "/fapi/v1/order"): (fapi.modify_order, auth.TRADE),
}


def table(routes: list[BaseRoute]) -> dict[tuple[str, str], FastRoute]:
    """The fast routes of an app, each bound to its registered route; empty when switched off."""
    if not enabled():
        return {}
    found: dict[tuple[str, str], FastRoute] = {}
    for context in iter_route_contexts(routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods:
            entry = ROUTES.get((method, route.path))
            if entry is not None and route.endpoint is entry[0]:
                found[(method, route.path)] = FastRoute(route, entry[1])
    missing = set(ROUTES) - set(found)
    if missing:
        raise ValueError(f"fast routes not registered with their endpoint: {sorted(missing)}")
    return found


def _json(content: Any) -> Response:
    """A returned dict as FastAPI sends it (JSONResponse: compact, UTF-8), encoded by msgspec: the same
    bytes for the str / int / bool / None values the endpoints return, in a third of json.dumps' time."""
    return Response(_ENCODER.encode(content), media_type="application/json")


_ENCODER = msgspec.json.Encoder()


async def serve(fast: FastRoute, scope: Scope, receive: Receive, send: Send) -> None:
    """One request on a fast route: the signed caller, the endpoint, its answer or its error."""
    scope["route"] = fast.route
    scope["endpoint"] = fast.route.endpoint
    request = Request(scope, receive)
    try:
        caller = await fapi.signed_caller(request, fast.permission)
        result = await fast.route.endpoint(request, deps(request), caller)
        response = result if isinstance(result, Response) else _json(result)
    except (PerplineError, UnitError) as exc:
        response = await errors.on_perpline_error(request, exc)
    except errors.NoDecision as exc:
        response = await errors.on_no_decision(request, exc)
    await response(scope, receive, send)
