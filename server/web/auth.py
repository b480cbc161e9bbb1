"""Signing in to the console.

The login token of ``POST /api/v1/auth/login`` (same service, same audit) is kept in an
HttpOnly, SameSite=Strict cookie. Every POST also carries a CSRF token: derived from the
session token (an HMAC, so nothing is stored) once signed in, and a random double-submit
cookie on the sign-in form itself.

Who may see what is not decided here: the pages ask the permissions table the API's role
dependency reads (``server.base.permissions``), and device scope is ``server.base.access``, as
in the API.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Request, Response

from server.api.deps import SessionDep
from server.base import users
from server.base.users import Principal
from server.errors import Forbidden, InvalidInput, Unauthorized

__all__ = [
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "WebSession",
    "WebUser",
    "check_csrf",
    "clear_session",
    "csrf_for",
    "form_data",
    "new_login_csrf",
    "set_session",
]

SESSION_COOKIE = "fleetcare_session"
LOGIN_CSRF_COOKIE = "fleetcare_login_csrf"


def csrf_for(token: str) -> str:
    """The CSRF token of one signed-in session: only someone holding the cookie can compute it."""
    return hmac.new(token.encode(), b"fleetcare-web-csrf", hashlib.sha256).hexdigest()


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class WebSession:
    principal: Principal
    csrf: str


async def web_session(request: Request, session: SessionDep) -> WebSession:
    """The signed-in user from the session cookie; :class:`Unauthorized` sends them to sign in."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise Unauthorized("sign in to use the console")
    return WebSession(await users.authenticate(session, token), csrf_for(token))


WebUser = Annotated[WebSession, Depends(web_session)]


def set_session(response: Response, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


MAX_FORM_BYTES = 64 * 1024


async def form_data(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the console's only form encoding), last
    value wins. The stdlib parser is enough for that one encoding; bodies are capped, since the
    console's forms are small and a huge body must not be buffered."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise InvalidInput(f"form: the form is larger than {MAX_FORM_BYTES} bytes", field="form")
    body = raw.decode("utf-8", errors="replace")
    return {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}


def check_csrf(web: WebSession, form: dict[str, str]) -> None:
    if not hmac.compare_digest(form.get("csrf", ""), web.csrf):
        raise Forbidden("csrf: the form is stale or came from another site; reload the page and try again")
