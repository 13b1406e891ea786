"""Web sessions (/api/v1/auth), rendered: sign up, log in for a short-lived JWT, refresh it, log out.
The rules (login format, lockouts, rotation decided by the log) are perpline.api.service.sessions;
trading endpoints accept `Authorization: Bearer <access token>` wherever they accept a signed
request (perpline.api.v1)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, StrictStr

from perpline.api import errors, models
from perpline.api.deps import ApiDeps, request_deps
from perpline.api.models import ok
from perpline.api.service import sessions as service
from perpline.auth import passwords, sessions

router = APIRouter(prefix="/api/v1/auth", tags=["sessions"], responses=errors.documented(*errors.COMMON_ERRORS))
Deps = Annotated[ApiDeps, Depends(request_deps)]


class Credentials(BaseModel):
    login: StrictStr = Field(min_length=3, max_length=64, description="letters, digits and . _ @ + -")
    password: StrictStr = Field(min_length=passwords.MIN_PASSWORD_CHARS, max_length=passwords.MAX_PASSWORD_CHARS)


class RefreshBody(BaseModel):
    refresh_token: StrictStr = Field(min_length=10, max_length=256)


def _session(s: service.Session) -> dict[str, Any]:
    return {"access_token": s.access_token, "token_type": "Bearer", "expires_in": sessions.ACCESS_TTL_S,
            "expires_s": s.expires_s, "refresh_token": s.refresh_token, "user_id": s.user_id}


@router.post("/signup", responses=ok(models.SignedUp))
async def signup(body: Credentials, request: Request, d: Deps) -> Any:
    """A new user with a login and password (no money: deposits come from the wallet side)."""
    return {"user_id": await service.signup(d, request, body.login, body.password), "login": body.login}


@router.post("/login", responses=ok(models.Session))
async def login(body: Credentials, request: Request, d: Deps) -> Any:
    """A session for a login and password; 429 LOGIN_LOCKED while the login or address is locked out."""
    return _session(await service.login(d, request, body.login, body.password))


@router.post("/refresh", responses=ok(models.Session))
async def refresh(body: RefreshBody, request: Request, d: Deps) -> Any:
    """A new access token and a new refresh token; the old session ends (rotation)."""
    return _session(await service.refresh(d, request, body.refresh_token))


@router.post("/logout", responses=ok(models.LoggedOut))
async def logout(request: Request, d: Deps) -> Any:
    await service.logout(d, request)
    return {"ok": True}


@router.get("/me", responses=ok(models.Me))
async def me(request: Request, d: Deps) -> Any:
    claims = await service.bearer_claims(request, d)
    return {"user_id": claims.user_id, "login": service.login_of(d, claims.user_id), "expires_s": claims.expires_s}
