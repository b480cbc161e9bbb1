"""Signing in and out: the form, the login (the API's login service, same audit, same token
lifetime) into the session cookie, and sign-out revoking the token. Without a page asked for,
sign-in leads to the first page the user may open (``server.web.navigation``)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from server.api.deps import RuntimeDep, SessionDep
from server.base import users
from server.errors import Unauthorized
from server.web import auth, navigation
from server.web.auth import WebUser
from server.web.rendering import page_router, templates

__all__ = ["router", "safe_next"]

router = page_router()


def safe_next(value: str | None) -> str:
    """Only a local path: never redirect off the server after sign-in."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None) -> Response:
    token = auth.new_login_csrf()
    response = templates.TemplateResponse(
        request, "login.html", {"user": None, "csrf": token, "next": safe_next(next), "error": None}
    )
    response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, path="/login", httponly=True, samesite="strict")
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    form = await auth.form_data(request)
    target = safe_next(form.get("next"))
    expected = request.cookies.get(auth.LOGIN_CSRF_COOKIE, "")
    error: str | None = None
    if not expected or form.get("csrf") != expected:
        error = "The sign-in form expired; please try again."
    else:
        try:
            issued, _user = await users.login(
                session,
                form.get("username", ""),
                form.get("password", ""),
                ttl=timedelta(seconds=runtime.settings.auth.login_token_ttl),
                source=request.client.host if request.client else None,
            )
        except Unauthorized:
            error = "Wrong user name or password."
        else:
            if target == "/":  # no page asked for: the first one this user may open
                target = await navigation.landing(session, await users.authenticate(session, issued.token))
            signed_in = RedirectResponse(target, status_code=303)
            auth.set_session(signed_in, request, issued.token, int(runtime.settings.auth.login_token_ttl))
            signed_in.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/login")
            return signed_in
    token = auth.new_login_csrf()
    response = templates.TemplateResponse(
        request,
        "login.html",
        {"user": None, "csrf": token, "next": target, "error": error, "username": form.get("username", "")},
        status_code=401,
    )
    response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, path="/login", httponly=True, samesite="strict")
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep, web: WebUser) -> Response:
    auth.check_csrf(web, await auth.form_data(request))
    if web.principal.token_id is not None:
        await users.revoke_token_id(session, web.principal.token_id, actor=web.principal.actor)
    response = RedirectResponse("/login", status_code=303)
    auth.clear_session(response)
    return response
