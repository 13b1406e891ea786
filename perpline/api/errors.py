"""API errors as values: {"code": int, "msg": str} with an HTTP status chosen by the code's subsystem."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.units import UnitError


class ErrorBody(BaseModel):
    """Every error: a result code (perpline.contracts.codes), a message, and the request's trace id."""

    code: int
    msg: str
    traceId: str = ""  # noqa: N815 (wire name)


class Pending(BaseModel):
    """202: the command is on its way but no decision arrived within the wait; poll the request."""

    status: str
    request_id: str
    code: int
    msg: str


class NoDecision(PerplineError):
    """A command was sent and no decision arrived within the API's wait (the one timeout behaviour of
    every surface): the native API answers 202 with the request id to poll, /fapi Binance's timeout."""

    def __init__(self, request_id: str) -> None:
        super().__init__(Code.TIMEOUT, "no decision yet; poll GET /api/v1/requests/{request_id}")
        self.request_id = request_id


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a router: the error statuses its handlers can answer with."""
    out: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody, "description": "error"} for status in statuses}
    return out


# What any route may answer besides its success: validation (400/422), identity (401/403), rate
# limits and sizes (413/429), infrastructure (503/504).
COMMON_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429, 503, 504)

_STATUS_BY_CODE = {
    Code.UNKNOWN_ORDER: 404,
    Code.TIMEOUT: 504,
    Code.BROKER_UNAVAILABLE: 503,
    Code.CLICKHOUSE_UNAVAILABLE: 503,
    Code.NOT_READY: 503,
    Code.STALE_SNAPSHOT: 409,
    Code.INTERNAL: 500,
    Code.UNAUTHORIZED: 401,
    Code.BAD_API_KEY: 401,
    Code.BAD_CREDENTIALS: 401,
    Code.BAD_TOKEN: 401,
    Code.LOGIN_TAKEN: 409,
    Code.FORBIDDEN: 403,
    Code.RATE_LIMITED: 429,
    Code.LOGIN_LOCKED: 429,
    Code.REQUEST_TOO_LARGE: 413,
}


def http_status(code: int) -> int:
    try:
        return _STATUS_BY_CODE.get(Code(code), 400)
    except ValueError:
        return 400


def error_body(code: int, msg: str, trace_id: str) -> dict[str, object]:
    return {"code": int(code), "msg": msg, "traceId": trace_id}


def error_response(request: Request, code: int, msg: str, instrument: object = None) -> JSONResponse:
    trace_id = getattr(request.state, "trace_id", "")
    headers = {"X-Trace-Id": trace_id}
    retry_after = getattr(request.state, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    used = getattr(request.state, "used_weight", None)
    if used is not None:
        headers["X-MBX-USED-WEIGHT-1M"] = str(used)
    if request.url.path.startswith("/fapi"):  # Binance's wire: its codes and messages
        from perpline.api import binance  # noqa: PLC0415

        status, body = binance.error(code, msg, instrument)  # type: ignore[arg-type]
        return JSONResponse(body, status_code=status, headers=headers)
    return JSONResponse(error_body(code, msg, trace_id), status_code=http_status(code), headers=headers)


async def on_perpline_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, (PerplineError, UnitError))
    return error_response(request, int(exc.code), exc.msg, getattr(exc, "instrument", None))


async def on_no_decision(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NoDecision)
    if request.url.path.startswith("/fapi"):
        return error_response(request, int(exc.code), "no decision in time")
    body = Pending(status="PENDING", request_id=exc.request_id, code=int(exc.code), msg=exc.msg)
    return JSONResponse(body.model_dump(), status_code=202, headers={"X-Trace-Id": getattr(request.state, "trace_id", "")})


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    return error_response(request, int(Code.MALFORMED), f"{where}: {first.get('msg', 'invalid request')}")
