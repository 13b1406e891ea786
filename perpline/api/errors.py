"""API errors as values: {"code": int, "msg": str} with an HTTP status chosen by the code's subsystem."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from perpline.contracts.codes import Code, PerplineError
from perpline.contracts.units import UnitError

_STATUS_BY_CODE = {
    Code.UNKNOWN_ORDER: 404,
    Code.TIMEOUT: 504,
    Code.BROKER_UNAVAILABLE: 503,
    Code.CLICKHOUSE_UNAVAILABLE: 503,
    Code.INTERNAL: 500,
    Code.UNAUTHORIZED: 401,
    Code.FORBIDDEN: 403,
    Code.RATE_LIMITED: 429,
    Code.REQUEST_TOO_LARGE: 413,
}


def http_status(code: int) -> int:
    try:
        return _STATUS_BY_CODE.get(Code(code), 400)
    except ValueError:
        return 400


def error_body(code: int, msg: str, trace_id: str) -> dict[str, object]:
    return {"code": int(code), "msg": msg, "traceId": trace_id}


def error_response(request: Request, code: int, msg: str) -> JSONResponse:
    trace_id = getattr(request.state, "trace_id", "")
    return JSONResponse(error_body(code, msg, trace_id), status_code=http_status(code), headers={"X-Trace-Id": trace_id})


async def on_perpline_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, (PerplineError, UnitError))
    return error_response(request, int(exc.code), exc.msg)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    return error_response(request, int(Code.MALFORMED), f"{where}: {first.get('msg', 'invalid request')}")
